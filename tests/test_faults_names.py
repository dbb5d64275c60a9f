"""Generated file names: one unit's pictures and maps never share a file with another unit's,
and a long category or photo name never makes a name the disk refuses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcnn.experiment import load_config, run
from xcnn.experiment.pictures import load_maps
from xcnn import files

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 64
LONG_CATEGORY = "c" * 250
LONG_PHOTO = "p" * 236 + ".png"  # 240 bytes: a legal file name


def _folder(root: Path, rows: list[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    """A folder-format dataset: one random photo per path, and each row its own mask (a
    rectangle at its own place), so every unit's mask differs from the others'."""
    rng = np.random.default_rng(0)
    masks = {}
    lines = []
    for k, (photo, category) in enumerate(rows):
        file = root / photo
        file.parent.mkdir(parents=True, exist_ok=True)
        if not file.exists():
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(file)
        mask = np.zeros((SIDE, SIDE), bool)
        mask[8 + 10 * k: 30 + 10 * k, 5 + 12 * k: 25 + 12 * k] = True
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"m{k}.png")
        lines.append(f"{photo},masks/m{k}.png,{category}")
        masks[(photo, category)] = mask
    (root / "masks.csv").write_text("image,mask,category\n" + "\n".join(lines) + "\n")
    return masks


def _run(tmp_path: Path, rows: list[tuple[str, str]]) -> tuple[Path, list[dict], dict]:
    """A real run of the tiny random-weight net on those rows, 64 px, maps saved."""
    masks = _folder(tmp_path / "data", rows)
    categories = list(dict.fromkeys(c for _, c in rows))
    targets = "\n".join(f"{json.dumps(c)} = [{i % 3}]" for i, c in enumerate(categories))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nformat = "folder"\nroot = "{tmp_path / "data"}"\ncategories = {json.dumps(categories)}\n'
                   f'images_per_category = 10\nmin_area = 0.01\n\n[data.targets]\n{targets}\n\n'
                   f'[[models]]\nname = "python:tests.tiny_net:build"\nweights = "random"\n'
                   f'classes = ["cat", "dog", "bird"]\n\n'
                   f'[run]\nsizes = [{SIDE}]\nmethods = ["gradient", "gradcam"]\ngrowth = 0\ndevice = "cpu"\n')
    out = tmp_path / "run"
    summary = run(load_config(cfg), out, save_maps=True)
    assert summary.failed == 0 and summary.records > 0
    records = [r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines()) if "method" in r]
    return out, records, masks


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def test_units_whose_names_slug_alike_keep_their_own_pictures_and_maps(tmp_path: Path) -> None:
    rows = [("photos/a b.png", "hot dog"), ("photos/a b.png", "hot-dog"), ("photos/a_b.png", "hot dog")]
    out, records, masks = _run(tmp_path, rows)
    assert {(r["id"], r["class"]) for r in records} == set(rows)
    # each unit's mask picture is its own mask
    for r in records:
        with Image.open(out / r["mask_png"]) as pic:
            assert np.array_equal(np.asarray(pic) > 127, masks[(r["id"], r["class"])]), r["mask_png"]
    # three units: three masks and, per method, three map pictures
    assert len({r["mask_png"] for r in records}) == 3
    for method in ("gradient", "gradcam"):
        assert len({r["map_png"] for r in records if r["method"] == method}) == 3
    # two photos, two pictures, each closer to its own photo than to the other
    pictures = {r["id"]: r["image_png"] for r in records}
    assert len(set(pictures.values())) == 2
    photos = {p: _pixels(tmp_path / "data" / p) for p in pictures}
    for p, png in pictures.items():
        other = next(q for q in photos if q != p)
        mine = _pixels(out / png)
        assert np.abs(mine - photos[p]).mean() < np.abs(mine - photos[other]).mean()
    # --save-maps: one .npz per unit, each holding that unit's mask
    saved = sorted((out / "maps").rglob("*.npz"))
    assert len(saved) == 3
    found = {key for f in saved for key, m in masks.items() if np.array_equal(load_maps(f)["mask"], m)}
    assert found == set(masks)


def test_long_category_and_photo_names_give_short_file_names(tmp_path: Path) -> None:
    rows = [(f"photos/{LONG_PHOTO}", "dog"), ("photos/b.png", LONG_CATEGORY)]
    out, records, _ = _run(tmp_path, rows)
    assert {(r["id"], r["class"]) for r in records} == set(rows)
    for r in records:
        for key in ("image_png", "mask_png", "map_png"):
            assert (out / r[key]).is_file()
    names = [p.name for p in out.rglob("*")]
    assert names and max(len(n.encode()) for n in names) < 150, max(names, key=len)
    # a rerun finds every unit done, rather than failing the same way again
    again = run(load_config(tmp_path / "c.toml"), out, save_maps=True)
    assert again.failed == 0 and again.records == 0 and again.units_done_before == again.units_total > 0


@pytest.mark.parametrize("texts", [
    ["a b", "a-b", "a_b", "a__b", "A_b", "a b ", "_a_b"],
    ["猫", "犬", "", "x", "x_", "-"],
    ["c" * 250, "c" * 251, "c" * 100, "c" * 101, "C" * 250],
])
def test_slug_is_injective_safe_and_short(texts: list[str]) -> None:
    names = [files.slug(t) for t in texts]
    assert len({n.casefold() for n in names}) == len(texts), names  # also on disks that ignore case
    for n in names:
        assert n and len(n.encode()) <= 100 and n.isascii() and "/" not in n and n not in (".", "..")


def test_plain_names_keep_their_old_form() -> None:
    # COCO ids, VOC ids, model names and one-word or spaced categories: what earlier runs named them
    assert [files.slug(t) for t in ("42", "2007_000032", "mobilenet_v2", "224")] == ["42", "2007_000032", "mobilenet_v2",
                                                                                 "224"]
    assert files.unit_stem("42", "dog") == "42_dog" and files.unit_stem("139", "dining table") == "139_dining_table"


def test_unit_stems_are_injective_with_every_method_after_them() -> None:
    from xcnn.methods import registry

    keys = [("a b", "hot dog"), ("a b", "hot-dog"), ("a_b", "hot dog"), ("a", "b hot dog"), ("a_b", "hot_dog"),
            ("1_2", "dog"), ("1", "2 dog"), ("1", "2_dog"), ("1", "Dog"), ("1", "dog"), ("1", "a guided"),
            ("1", "a"), ("1", "a input x"), ("1", "guided"), ("1", LONG_CATEGORY), ("1", LONG_CATEGORY + "x")]
    methods = (*registry.ALL_METHODS, *registry.BASELINE_NAMES)
    stems = [files.unit_stem(i, c, methods) for i, c in keys]
    names = [f"{stem}_{m}" for stem in stems for m in (*methods, "mask")]
    assert len({n.casefold() for n in names}) == len(names)
    assert max(len(stem) for stem in stems) <= files.NAME_MAX
    # "1_a_guided" + "_gradcam" would be "1_a" + "_guided_gradcam": that category is hashed
    assert files.unit_stem("1", "a guided") == "1_a_guided" != files.unit_stem("1", "a guided", methods)

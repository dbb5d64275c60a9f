"""Hostile files, round three, in the data layer: a polygon never crashes the process, an RLE
never gives a random mask, an ambiguous category name is refused, and every bad input is one
XcnnError line naming the file (issue 20)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as cocomask

from tests import test_download
from tests.test_download import Server, tiny
from tests.test_faults_data import coco_cli, image, one_line, serve_annotations, write
from tests.test_formats import make_boxes, make_folder, make_voc
from tests.test_formats import photos as photos  # the module-scoped photo fixture, here too
from xcnn.data import BoxDataset, CocoDataset, FolderDataset, VocDataset
from xcnn.data import download as dl
from xcnn.errors import XcnnError

server = test_download.server  # the local HTTP server fixture, here too
REPO = Path(__file__).parents[1]
H, W = tiny.H, tiny.W  # the tiny COCO set's images: 30 high, 40 wide
TALL = cocomask.encode(np.zeros((W, W), np.uint8, order="F"))["counts"].decode()  # a valid RLE of 40×40


def first_segmentation(segmentation: object):
    """An edit of the tiny COCO set: annotation 1 (zebra on image 1) gets `segmentation`."""
    return lambda d: d["annotations"][0].update(segmentation=segmentation)


def refused_before_pycocotools(tmp_path: Path, segmentation: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one-line error for annotation 1's segmentation, raised before pycocotools sees it
    (a polygon far outside the image segfaults it; garbage RLE makes it read uninitialised memory)."""
    ds = CocoDataset(*write(tmp_path, first_segmentation(segmentation)))

    def not_reached(ann: dict) -> np.ndarray:
        raise AssertionError("pycocotools was handed the annotation")

    monkeypatch.setattr(ds.coco, "annToMask", not_reached)
    with pytest.raises(XcnnError) as err:
        ds.mask(1, "zebra")
    msg = one_line(err)
    assert "annotation 1 " in msg and "image 1" in msg and "annotations.json" in msg
    return msg


# 2. Polygons far outside the image


@pytest.mark.parametrize(
    "polygon",
    [[1e10, 1, 5, 1, 5, 1e10], [3e9, 1, 5, 1, 5, 3e9], [-1e10, 1, 5, 1, 5, 5],
     [4 * W + 1, 1, 5, 1, 5, 5], [1, -3 * H - 1, 5, 1, 5, 5], [1, 4 * H + 1, 5, 1, 5, 5]],
)
def test_polygon_far_outside_the_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, polygon) -> None:
    msg = refused_before_pycocotools(tmp_path, [[0, 0, 10, 0, 10, 10], polygon], monkeypatch)
    assert "outside" in msg and f"{W}×{H}" in msg


def test_polygon_at_the_edge_of_the_allowed_range_is_drawn(tmp_path: Path) -> None:
    # A polygon reaching 4× the image's size (or -3×) is drawn and clipped as before.
    ds = CocoDataset(*write(tmp_path, first_segmentation([[-3 * W, -3 * H, 4 * W, -3 * H, 4 * W, 4 * H,
                                                            -3 * W, 4 * H]])))
    assert ds.mask(1, "zebra").all()


def test_huge_polygon_does_not_crash_xcnn_data_coco(server: Server, tmp_path: Path) -> None:
    # In a subprocess: before the fix, pycocotools ended the process with a segfault.
    data, _ = tiny.instances()
    data["annotations"][0]["segmentation"] = [[1e10, 1, 5, 1, 5, 1e10]]
    serve_annotations(server, data)
    code = "import sys, xcnn.cli; sys.exit(xcnn.cli.main(sys.argv[1:]))"
    args = ["data", "coco", "--root", str(tmp_path), "--split", "val2017", "--categories", "zebra",
            "--base-url", server.url]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)
    errors = [line for line in out.stderr.splitlines() if line.startswith("xcnn: error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(errors) == 1 and "annotation 1 " in errors[0] and "image 1" in errors[0]
    assert "Traceback" not in out.stderr


# 3. Malformed RLE


@pytest.mark.parametrize(
    "segmentation",
    [
        {"size": [H, W], "counts": "0"},  # one run of 0 pixels: pycocotools leaves the rest uninitialised
        {"size": [H, W], "counts": "z" * 40},  # outside the alphabet '0'..'o'
        {"size": [H, W], "counts": "P"},  # a continuation bit on the last character
        {"size": [H, W], "counts": TALL},  # runs adding up to 40×40, more than 30×40
        {"size": [H, W], "counts": "011K"},  # a negative run (its delta goes below the run two back)
        {"size": [H, W], "counts": "ab\u00e9"},  # not ASCII
        {"size": [H, W], "counts": "0" + "o" * 8 + "0"},  # a run too long to be one (int overflow in C)
        {"size": [H, W], "counts": ""},
        {"size": [float(H), float(W)], "counts": [H * W]},  # size of floats: not whole numbers
    ],
)
def test_malformed_rle_is_refused_before_pycocotools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     segmentation) -> None:
    msg = refused_before_pycocotools(tmp_path, segmentation, monkeypatch)
    assert "RLE" in msg


def test_valid_compressed_rles_still_decode_exactly(tmp_path: Path) -> None:
    # Masks whose runs are long, short, start with an object pixel, or cover the whole image.
    rng = np.random.default_rng(0)
    masks = [rng.random((H, W)) < 0.5, np.ones((H, W), bool), np.zeros((H, W), bool)]
    masks[2][3:25, 1:39] = True
    masks[2][0, 0] = True
    for k, want in enumerate(masks):
        rle = cocomask.encode(np.asfortranarray(want.astype(np.uint8)))
        seg = {"size": [H, W], "counts": rle["counts"].decode()}
        ds = CocoDataset(*write(tmp_path / str(k), first_segmentation(seg)))
        assert (ds.mask(1, "zebra") == want).all()


def test_compressed_rle_checker_agrees_with_pycocotools_on_valid_strings() -> None:
    from xcnn.data.coco import _rle_runs

    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        m = rng.random((h, w)) < rng.random()
        rle = cocomask.encode(np.asfortranarray(m.astype(np.uint8)))
        runs = _rle_runs(rle["counts"].decode())
        assert runs is not None and sum(runs) == h * w
        assert (cocomask.decode({"size": [h, w], "counts": rle["counts"]}).astype(bool) == m).all()
        again = cocomask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        assert again["counts"] == rle["counts"]


# 7. Category names that differ only in case


def test_category_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    ds = CocoDataset(*write(tmp_path, lambda d: d["categories"].append({"id": 99, "name": "Zebra"})))
    for asked in ("zebra", "Zebra", "ZEBRA"):
        with pytest.raises(XcnnError) as err:
            ds.category(asked)
        msg = one_line(err)
        assert "24" in msg and "99" in msg and "annotations.json" in msg
    with pytest.raises(XcnnError, match="99"):
        ds.select(["zebra"], 3, seed=0)
    assert ds.category("person")["id"] == 1  # other names are not ambiguous


# 11. Tracebacks that become one line


def test_nul_byte_in_a_coco_file_name_is_one_line(tmp_path: Path) -> None:
    ds = CocoDataset(*write(tmp_path, lambda d: image(d, 1).update(file_name="000\x00001.jpg")))
    with pytest.raises(XcnnError) as err:
        ds.select(["zebra"], 30, seed=0)
    msg = one_line(err)
    assert "image 1" in msg and "NUL" in msg


def test_nul_byte_in_a_voc_split_line_is_one_line(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_voc(tmp_path / "voc", photos)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\x00c\n")
    with pytest.raises(XcnnError) as err:
        VocDataset(root)
    msg = one_line(err)
    assert "val.txt" in msg and "NUL" in msg


def test_non_utf8_voc_split_file_is_one_line(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_voc(tmp_path / "voc", photos)
    (root / "ImageSets/Segmentation/val.txt").write_bytes(b"a\nb\xff\n")
    with pytest.raises(XcnnError) as err:
        VocDataset(root)
    msg = one_line(err)
    assert "val.txt" in msg and "UTF-8" in msg


@pytest.mark.parametrize(("tag", "value"), [("width", "inf"), ("width", "1e400"), ("height", "-inf"),
                                            ("xmax", "1e999"), ("ymin", "-1e999")])
def test_infinite_numbers_in_a_box_xml_are_one_line(tmp_path: Path, tag: str, value: str) -> None:
    image_dir, box_dir = make_boxes(tmp_path)
    xml = box_dir / "ILSVRC2012_val_00000001.xml"
    text = xml.read_text()
    start = text.index(f"<{tag}>")
    xml.write_text(text[:start] + f"<{tag}>{value}</{tag}>" + text[text.index(f"</{tag}>", start) + len(tag) + 3:])
    with pytest.raises(XcnnError) as err:
        BoxDataset(image_dir, box_dir)
    msg = one_line(err)
    assert "ILSVRC2012_val_00000001.xml" in msg and f"<{tag}>" in msg and value in msg


@pytest.mark.parametrize("encoding", ["klingon", "rot13"])
def test_unknown_xml_encoding_is_one_line(tmp_path: Path, encoding: str) -> None:
    image_dir, box_dir = make_boxes(tmp_path)
    xml = box_dir / "ILSVRC2012_val_00000002.xml"
    xml.write_text(f'<?xml version="1.0" encoding="{encoding}"?>' + xml.read_text())
    with pytest.raises(XcnnError) as err:
        BoxDataset(image_dir, box_dir)
    msg = one_line(err)
    assert "ILSVRC2012_val_00000002.xml" in msg and encoding in msg


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000,
                                  '{"images": [], "annotations": [], "categories": [], "n": ' + "7" * 5000 + "}"])
def test_json_python_cannot_hold_is_one_line(tmp_path: Path, text: str) -> None:
    ann, images = write(tmp_path)
    ann.write_text(text)
    with pytest.raises(XcnnError) as err:
        CocoDataset(ann, images)
    assert "annotations.json" in one_line(err)


def test_deeply_nested_extracted_json_is_extracted_again(server: Server, tmp_path: Path) -> None:
    path = dl.fetch_annotations(tmp_path, "val2017", server.url)
    good = path.read_bytes()
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert dl.fetch_annotations(tmp_path, "val2017", server.url).read_bytes() == good


# 12. Messages that mislead


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_voc_photo_without_its_mask_is_an_input_error(tmp_path: Path, photos: dict[str, Path], what: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    root = make_voc(tmp_path / "voc", photos)
    mask = root / "SegmentationClass" / "b.png"
    mask.unlink()
    if what == "folder":
        mask.mkdir()
    with pytest.raises(XcnnError) as err:
        VocDataset(root).digest()
    msg = one_line(err)
    assert "SegmentationClass/b.png" in msg and "'b'" in msg and "val.txt" in msg
    assert "I/O" not in msg and "free" not in msg


def test_a_folder_named_like_a_box_xml_is_an_input_error(tmp_path: Path) -> None:
    image_dir, box_dir = make_boxes(tmp_path)
    (box_dir / "d.xml").mkdir()
    with pytest.raises(XcnnError) as err:
        BoxDataset(image_dir, box_dir)
    msg = one_line(err)
    assert "d.xml" in msg and "folder" in msg and "I/O" not in msg


@pytest.mark.parametrize("url", ["ht!tp://x", "http://", "ftp://example.org", "example.org", "https:///x",
                                 "http://exa mple.org"])
def test_malformed_base_url_is_refused_at_once(server: Server, tmp_path: Path, url: str,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(dl.time, "sleep", lambda s: pytest.fail("retried a malformed URL"))
    rc = xcnn_cli_data_coco(tmp_path, "--base-url", url)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and repr(url) in err[0] and "--base-url" in err[0]
    assert "again later" not in err[0]
    assert not list(tmp_path.iterdir())


def test_malformed_base_url_from_the_environment_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dl.BASE_URL_ENV, "ht!tp://x")
    with pytest.raises(XcnnError, match=dl.BASE_URL_ENV) as err:
        dl.download_coco(tmp_path, "val2017", ["zebra"], dl.Selection(3))
    one_line(err)


def test_good_base_urls_are_taken(server: Server, tmp_path: Path) -> None:
    assert dl.base_url("https://example.org/coco/") == "https://example.org/coco"
    assert dl.base_url("file:///srv/coco") == "file:///srv/coco"
    assert coco_cli(server, tmp_path, "--per-category", "3") == 0


def xcnn_cli_data_coco(root: Path, *extra: str) -> int:
    import xcnn.cli

    return xcnn.cli.main(["data", "coco", "--root", str(root), "--split", "val2017", "--categories", "zebra", *extra])


def test_wrong_size_mask_warns_naming_photo_and_mask_and_is_listed(tmp_path: Path, photos: dict[str, Path],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(tmp_path / "set", photos)
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(root / "masks" / "a_0.png")
    ds = FolderDataset(root)
    with caplog.at_level(logging.WARNING, logger="xcnn.data"):
        samples, skipped = ds.select(["dog"], 5, seed=0)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "a.jpg" in r.getMessage()]
    assert len(warned) == 1 and "masks/a_0.png" in warned[0] and "32×24" in warned[0] and "64×48" in warned[0]
    assert skipped == {"file size differs from annotation": 1}
    assert [(s.file, s.reason) for s in ds.skipped_photos] == [("photos/a.jpg", "file size differs from annotation")]
    rows = [json.loads(line) for line in ds.skipped_jsonl().decode().splitlines()]
    assert len(rows) == 1 and rows[0]["image"] == "photos/a.jpg" and rows[0]["category"] == "dog"
    assert rows[0]["reason"] == "file size differs from annotation" and "a_0.png" in rows[0]["detail"]
    ds.select(["cat"], 5, seed=0)  # each selection lists its own
    assert ds.skipped_photos == ()


def test_every_skipped_photo_is_listed_with_its_reason(tmp_path: Path) -> None:
    from xcnn.data.coco import MISSING, TOO_SMALL, UNREADABLE, WRONG_SIZE

    ds = CocoDataset(*write(tmp_path))
    _, skipped = ds.select(["zebra"], 30, seed=0)
    listed = {(s.image_id, s.file, s.reason) for s in ds.skipped_photos}
    assert listed == {(4, "000004.jpg", TOO_SMALL), (5, "000005.jpg", MISSING), (6, "000006.jpg", UNREADABLE),
                      (7, "000007.jpg", WRONG_SIZE)}
    assert sum(skipped.values()) == len(ds.skipped_photos)


def test_masks_csv_linked_from_outside_the_folder_is_refused(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_folder(tmp_path / "set", photos)
    outside = tmp_path / "elsewhere.csv"
    (root / "masks.csv").rename(outside)
    (root / "masks.csv").symlink_to(outside)
    with pytest.raises(XcnnError) as err:
        FolderDataset(root)
    msg = one_line(err)
    assert "masks.csv" in msg and "outside" in msg
    # a link that stays inside the folder is fine
    (root / "masks.csv").unlink()
    outside.rename(root / "real.csv")
    (root / "masks.csv").symlink_to(root / "real.csv")
    assert FolderDataset(root).categories == ["cat", "dog"]


def test_a_5000_digit_image_id_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import xcnn.cli

    assert xcnn.cli.main(["report", str(tmp_path), "--images", "7" * 5000 + ",139"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xcnn: error: --images") and "5000 digits" in err[0]
    assert len(err[0]) < 300

"""Bad data and hostile files in the data layer: nothing escapes the dataset's folder, nothing
is lost or silently mis-scored, and every error is one XcnnError line naming the file and record.
"""
from __future__ import annotations

import io
import json
import logging
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xcnn.cli
from tests import test_download
from tests.test_download import ZIP_PATH, Server, tiny
from xcnn.data import CocoDataset, load_image
from xcnn.data import download as dl
from xcnn.errors import XcnnError

DATA_DIR = Path(__file__).parents[1] / "src" / "xcnn" / "data"
server = test_download.server  # the local HTTP server fixture, here too


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def write(root: Path, edit=None) -> tuple[Path, Path]:
    """The tiny COCO set under root, after `edit(data)` changed its annotations."""
    data, files = tiny.instances()
    if edit is not None:
        edit(data)
    return tiny.write(root, data, files)


def image(data: dict, image_id: int) -> dict:
    return next(im for im in data["images"] if im is not None and im["id"] == image_id)


def serve_annotations(server: Server, data: dict) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(data))
    server.files[ZIP_PATH] = archive.getvalue()


def coco_cli(server: Server, root: Path, *extra: str) -> int:
    return xcnn.cli.main(["data", "coco", "--root", str(root), "--split", "val2017",
                          "--categories", "zebra", "--base-url", server.url, *extra])


# 1. Paths escaping the dataset


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_select_refuses_a_file_name_outside_the_image_folder(tmp_path: Path, where: str) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(tiny.jpeg_bytes(seed=1))
    name = "../../outside.jpg" if where == "dotdot" else str(outside)
    ds = CocoDataset(*write(tmp_path / "ds", lambda d: image(d, 1).update(file_name=name)))
    with pytest.raises(XcnnError) as err:
        ds.select(["zebra"], 30, seed=0)
    msg = one_line(err)
    assert "image 1" in msg and repr(name) in msg and "outside" in msg


def test_symlinked_root_works_but_a_link_inside_leading_out_is_refused(tmp_path: Path) -> None:
    ann, images = write(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(images, target_is_directory=True)
    samples, _ = CocoDataset(ann, link).select(["zebra"], 3, seed=0)
    assert len(samples) == 3 and all(s.file.parent == link for s in samples)

    outside = tmp_path / "outside.jpg"
    outside.write_bytes(tiny.jpeg_bytes(seed=1))
    (images / "000001.jpg").unlink()
    (images / "000001.jpg").symlink_to(outside)
    with pytest.raises(XcnnError) as err:
        CocoDataset(ann, images).select(["zebra"], 30, seed=0)
    assert "image 1" in one_line(err) and "000001.jpg" in str(err.value)


def test_inside_keeps_names_inside_and_refuses_the_rest(tmp_path: Path) -> None:
    from xcnn.data.paths import inside

    assert inside(tmp_path, "a/../b.jpg", "x") == tmp_path / "a/../b.jpg"
    for bad in ("../b.jpg", "/etc/passwd", "", ".", None, 5):
        with pytest.raises(XcnnError, match="^rec 7: ") as err:
            inside(tmp_path, bad, "rec 7")
        one_line(err)


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_download_neither_writes_nor_deletes_outside_root(server: Server, tmp_path: Path, where: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not an image, and not xcnn's")
    name = "../../victim.txt" if where == "dotdot" else str(victim)
    data, _ = tiny.instances()
    image(data, 1)["file_name"] = name
    serve_annotations(server, data)
    with pytest.raises(XcnnError) as err:
        dl.download_coco(tmp_path / "coco", "val2017", ["zebra"], dl.Selection(30, seed=0), url=server.url)
    assert "image 1" in one_line(err)
    assert victim.read_text() == "not an image, and not xcnn's"
    assert not any("victim" in p for p, _ in server.requests)


def test_download_leaves_a_foreign_file_at_an_image_path_alone(server: Server, tmp_path: Path) -> None:
    mine = tmp_path / "val2017" / "000001.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes, not a photo")
    out = dl.download_coco(tmp_path, "val2017", ["zebra"], dl.Selection(30, seed=0), url=server.url)
    selection = json.loads(out.read_text())
    assert mine.read_text() == "my notes, not a photo"
    assert 1 not in selection["images"]["zebra"]
    assert selection["skipped"][dl.IN_THE_WAY] == 1
    # the folder then selects exactly what the downloader chose
    ds = CocoDataset(tmp_path / "annotations" / "instances_val2017.json", tmp_path / "val2017")
    assert [s.image_id for s in ds.select(["zebra"], 30, seed=0)[0]] == selection["images"]["zebra"]


def test_split_cannot_lead_out_of_root(server: Server, tmp_path: Path) -> None:
    with pytest.raises(XcnnError, match="split") as err:
        dl.download_coco(tmp_path / "coco", "../../val2017", ["zebra"], dl.Selection(3), url=server.url)
    one_line(err)
    assert not server.requests


# 2. Duplicate ids


def test_duplicate_image_ids_are_refused(tmp_path: Path) -> None:
    def twin(d: dict) -> None:
        d["images"].append(dict(image(d, 2), file_name="000003.jpg"))
        d["images"].append(dict(image(d, 100), file_name="000101.jpg"))

    with pytest.raises(XcnnError) as err:
        CocoDataset(*write(tmp_path, twin))
    msg = one_line(err)
    assert "annotations.json" in msg and re.search(r"\b2, 100\b", msg)


# 3. 16-bit and float images


def _grey(path: Path) -> list[int]:
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert (out == out[..., :1]).all()
    return out[0, :, 0].tolist()


@pytest.mark.parametrize(
    ("values", "ext", "mode", "expect"),
    [
        (np.array([[0, 25700, 65535]], np.uint16), "png", "I;16", [0, 100, 255]),
        (np.array([[0, 25700, 65535]], np.uint16), "tif", "I;16", [0, 100, 255]),
        (np.array([[0, 25700, 65535]], np.int32), "tif", "I", [0, 100, 255]),  # 16-bit values in int32
        (np.array([[0, 100, 255]], np.int32), "tif", "I", [0, 100, 255]),  # 8-bit values in int32
        (np.array([[0.0, 0.5, 1.0]], np.float32), "tif", "F", [0, 128, 255]),
    ],
)
def test_wide_images_are_scaled_by_their_range(tmp_path: Path, values, ext: str, mode: str, expect) -> None:
    path = tmp_path / f"wide.{ext}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == mode
    assert _grey(path) == expect


@pytest.mark.parametrize(
    "values",
    [np.array([[0, 1, 70000]], np.int32), np.array([[-1, 0, 5]], np.int32),
     np.array([[0.0, 0.5, 2.0]], np.float32), np.array([[0.0, np.nan, 1.0]], np.float32)],
)
def test_wide_images_out_of_range_are_refused(tmp_path: Path, values) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(XcnnError) as err:
        load_image(path)
    msg = one_line(err)
    assert "odd.tif" in msg and repr(Image.open(path).mode) in msg and "range" in msg


# 4. Huge images


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height RGB pixels and holds none: enough for any header reader."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 10000])  # over PIL's bomb error / only over its warning
def test_huge_image_is_one_line_naming_the_budget(tmp_path: Path, side: int) -> None:
    from xcnn.data import DEFAULT_MAX_PIXELS, ImageTooLarge

    path = tmp_path / "huge.png"
    path.write_bytes(png_header(side, side))
    with pytest.raises(ImageTooLarge) as err:
        load_image(path)
    msg = one_line(err)
    assert f"{side}×{side}" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg
    assert "run.max_pixels" in msg and "--max-pixels" in msg and "huge.png" in msg
    # the knob works beyond PIL's own limit: the header is read, and the next check speaks
    with pytest.raises(XcnnError, match="annotation says 40×30"):
        load_image(path, (30, 40), max_pixels=side * side)


def test_pixel_budget_counts_pixels(tmp_path: Path) -> None:
    from xcnn.data import ImageTooLarge

    path = tmp_path / "small.jpg"
    path.write_bytes(tiny.jpeg_bytes())
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageTooLarge, match="40×30"):
        load_image(path, max_pixels=1199)
    with pytest.raises(XcnnError, match="max_pixels"):
        load_image(path, max_pixels=0)


def test_select_skips_huge_and_over_budget_images(tmp_path: Path) -> None:
    from xcnn.data.coco import TOO_LARGE

    ann, images = write(tmp_path)
    (images / "000001.jpg").write_bytes(png_header(20000, 20000))
    ds = CocoDataset(ann, images)
    samples, skipped = ds.select(["zebra"], 30, seed=0)
    assert 1 not in {s.image_id for s in samples} and skipped[TOO_LARGE] == 1
    # a budget below the annotated 40×30 skips every image, by the annotation alone
    samples, skipped = ds.select(["zebra"], 30, seed=0, max_pixels=1000)
    assert not samples and skipped == {TOO_LARGE: 27}


# 5. One line instead of a traceback


@pytest.mark.parametrize(
    "args",
    [["--seed", "-1"], ["--per-category", "0"], ["--min-area", "2"], ["--max-pixels", "0"],
     ["--split", "val"]],
)
def test_arguments_are_checked_before_any_download(server: Server, tmp_path: Path, args, capsys) -> None:
    assert coco_cli(server, tmp_path, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xcnn: error:")
    assert not server.requests and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: image(d, 3).update(height="30"), ["image 3", "'height'", "'30'"]),
        (lambda d: image(d, 3).update(id="3"), ['"images"[2]', "'id'"]),
        (lambda d: d["images"].insert(4, None), ['"images"[4]', "None"]),
        (lambda d: d["annotations"].append(dict(d["annotations"][0], id=999, image_id=77)),
         ["annotation 999", "image 77", "add", "remove"]),
        (lambda d: d["annotations"].append(dict(d["annotations"][0], id=999, category_id=5)),
         ["annotation 999", "category 5"]),
        (lambda d: d["annotations"].__setitem__(0, [1, 2]), ['"annotations"[0]']),
        (lambda d: d["categories"].append({"id": 1, "name": "people"}), ["category", "1"]),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), ["annotation", "1"]),
    ],
)
def test_malformed_records_are_one_line(tmp_path: Path, edit, words: list[str]) -> None:
    with pytest.raises(XcnnError) as err:
        CocoDataset(*write(tmp_path, edit))
    msg = one_line(err)
    assert "annotations.json" in msg
    for word in words:
        assert word in msg


# 6. The downloader's verdicts


def test_short_selection_exits_3_with_a_summary(server: Server, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        assert coco_cli(server, tmp_path, "--per-category", "30") == 3
    assert "zebra 24 of 30" in caplog.text and "done" not in caplog.text
    with caplog.at_level(logging.INFO):
        assert coco_cli(server, tmp_path, "--per-category", "24") == 0


def test_web_page_for_the_archive_says_so(server: Server, tmp_path: Path, capsys) -> None:
    server.files[ZIP_PATH] = b"<html><body>Please log in to the proxy</body></html>"
    server.content_type[ZIP_PATH] = "text/html; charset=utf-8"
    assert coco_cli(server, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "web page" in err[0] and "--split" not in err[0]
    assert "XCNN_COCO_BASE_URL" in err[0] and "proxy" in err[0]
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.zip"))


def test_web_page_for_an_image_says_so(server: Server, tmp_path: Path) -> None:
    path = "/val2017/000001.jpg"
    server.files[path] = b"\n  <!DOCTYPE html><html><body>Not here</body></html>"
    with pytest.raises(XcnnError, match="web page") as err:
        dl.fetch(server.url + path, tmp_path / "000001.jpg", dl.check_image((30, 40)))
    one_line(err)
    assert len(server.got(path)) == 1 and not list(tmp_path.iterdir())


def test_cut_short_without_length_is_fetched_again(server: Server, tmp_path: Path) -> None:
    server.length = False
    path = "/val2017/000001.jpg"
    server.drop[ZIP_PATH] = server.drop[path] = 1
    member = "annotations/instances_val2017.json"
    assert dl.fetch(server.url + ZIP_PATH, tmp_path / "a.zip", dl.check_zip(member)) is None
    assert (tmp_path / "a.zip").read_bytes() == server.files[ZIP_PATH]
    assert dl.fetch(server.url + path, tmp_path / "1.jpg", dl.check_image((30, 40))) is None
    assert (tmp_path / "1.jpg").read_bytes() == server.files[path]


def test_corrupt_archive_is_named_not_blamed_on_the_split(server: Server, tmp_path: Path) -> None:
    member = b'{"images": [], "annotations": [], "categories": []}' * 50
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("annotations/instances_val2017.json", member)
    body = bytearray(archive.getvalue())
    body[body.index(member) + 10] ^= 0xFF  # a byte changed on the way: the CRC no longer matches
    server.files[ZIP_PATH] = bytes(body)
    with pytest.raises(XcnnError, match="CRC") as err:
        dl.fetch_annotations(tmp_path, "val2017", server.url)
    assert "--split" not in one_line(err) and "XCNN_COCO_BASE_URL" in str(err.value)
    assert not (tmp_path / "annotations" / "instances_val2017.json").exists()


def test_damaged_extracted_json_is_extracted_again(server: Server, tmp_path: Path) -> None:
    path = dl.fetch_annotations(tmp_path, "val2017", server.url)
    good = path.read_bytes()
    requests = len(server.requests)
    path.write_bytes(good[: len(good) // 2])  # e.g. a crash before the file reached the disk
    assert dl.fetch_annotations(tmp_path, "val2017", server.url).read_bytes() == good
    assert len(server.requests) == requests  # from the kept archive, not downloaded again
    # a valid JSON that is not the archive's copy is someone's own edit: kept
    path.write_text(json.dumps(json.loads(good)) + "\n")
    edited = path.read_bytes()
    assert dl.fetch_annotations(tmp_path, "val2017", server.url).read_bytes() == edited


def test_local_write_error_is_named_at_once(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a.zip.part").symlink_to("/dev/full")  # every write fails: no space left on device
    with pytest.raises(XcnnError, match="local") as err:
        dl.fetch(server.url + ZIP_PATH, tmp_path / "a.zip")
    assert "a.zip.part" in one_line(err) and "run again later" not in str(err.value)
    assert len(server.got(ZIP_PATH)) == 1


# 7. Only the errors we expect are caught


@pytest.mark.parametrize(
    "segmentation",
    [None, "abc", [], [[1, 2, 3]], [[1, 2, 3, 4, 5, 6, 7]], [["a", "b", "c", "d", "e", "f"]],
     {}, {"size": [30, 40]}, {"size": [30, 40], "counts": "!!!!"}, {"size": [30, 40], "counts": [5000]},
     {"size": [20, 20], "counts": [400]}, {"size": [30, 40], "counts": [1.5, 1198.5]},
     {"size": [30, 40], "counts": [-5, 1205]}],
)
def test_bad_segmentation_names_the_annotation(tmp_path: Path, segmentation) -> None:
    ds = CocoDataset(*write(tmp_path, lambda d: d["annotations"][0].update(segmentation=segmentation)))
    with pytest.raises(XcnnError) as err:
        ds.mask(1, "zebra")
    msg = one_line(err)
    assert "annotation 1 " in msg and "image 1" in msg and "annotations.json" in msg


def test_programming_errors_are_not_turned_into_data_errors(tmp_path: Path, monkeypatch) -> None:
    ds = CocoDataset(*write(tmp_path))

    def bug(ann: dict) -> np.ndarray:
        raise RuntimeError("a bug, not bad data")

    monkeypatch.setattr(ds.coco, "annToMask", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        ds.mask(1, "zebra")


def test_no_catch_all_in_the_data_layer() -> None:
    catch_all = re.compile(r"except\s*(:|\(?\s*(Base)?Exception\b)")
    found = [f"{p.name}:{n}" for p in sorted(DATA_DIR.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if catch_all.search(line)]
    assert not found

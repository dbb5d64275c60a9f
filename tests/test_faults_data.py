"""Bad data and hostile files in the data layer: nothing escapes the dataset's folder, nothing
is lost or silently mis-scored, and every error is one XcnnError line naming the file and record.
"""
from __future__ import annotations

import io
import json
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
from xcnn.data import load_image
from xcnn.errors import XcnnError

DATA_DIR = Path(__file__).parents[1] / "xcnn" / "data"
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

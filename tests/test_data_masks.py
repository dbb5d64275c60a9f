"""Dilation by area growth and nearest resizing of masks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xcnn.data import dilate, resize_mask
from xcnn.errors import XcnnError


def brute_distances(mask: np.ndarray) -> np.ndarray:
    """Distance from every pixel to the nearest mask pixel, by brute force (no scipy)."""
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d2 = (gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2
    return np.sqrt(d2.min(axis=-1))


def assert_smallest_radius(mask: np.ndarray, growth: float) -> None:
    out = dilate(mask, growth)
    target = (1 + growth) * mask.sum()
    d = brute_distances(mask)
    radius = d[out].max()
    assert np.array_equal(out, d <= radius + 1e-9)  # a disc of radius r around the mask
    assert out.sum() >= target
    smaller = d[d < radius - 1e-9].max()  # the next ring inwards
    assert (d <= smaller + 1e-9).sum() < target


def test_square_grows_by_one_ring() -> None:
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True  # 100 px; target 120; the ring at distance 1 adds 4·10
    out = dilate(mask, 0.20)
    assert out.sum() == 140
    assert out[14, 15:25].all() and not out[14, 14]  # the corner is at distance √2
    assert_smallest_radius(mask, 0.20)


def test_disc_and_other_growths() -> None:
    gy, gx = np.mgrid[:64, :64]
    disc = (gy - 30.0) ** 2 + (gx - 33.0) ** 2 <= 8.0**2
    for growth in (0.05, 0.2, 0.5, 1.0):
        assert_smallest_radius(disc, growth)


def test_border_clips_the_growth() -> None:
    mask = np.zeros((30, 30), bool)
    mask[:10, :10] = True  # corner square: only 10 + 10 pixels at distance 1 lie inside
    out = dilate(mask, 0.20)
    assert out.sum() == 120
    assert out[10, :10].all() and out[:10, 10].all() and not out[10, 10]
    assert_smallest_radius(mask, 0.30)


def test_whole_image_reached_gives_all_ones() -> None:
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    assert dilate(mask, 0.2).all()


def test_zero_growth_and_zero_area() -> None:
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2] = True
    assert np.array_equal(dilate(mask, 0.0), mask)
    with pytest.raises(XcnnError, match="zero-area mask") as err:
        dilate(np.zeros((5, 6), bool))
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError):
        dilate(mask, -0.1)


def test_resize_mask_by_hand() -> None:
    mask = np.array([[1, 0], [0, 1]], bool)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)
    assert np.array_equal(resize_mask(mask, (4, 4)), expected)
    assert resize_mask(mask, (4, 6)).shape == (4, 6)


@pytest.mark.parametrize("size", [(224, 224), (7, 13), (50, 31), (97, 160)])
def test_resize_mask_lines_up_with_pil_nearest(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((61, 83)) < 0.4
    # A photo whose red channel is the mask: PIL's NEAREST resize of it must pick the same pixels.
    photo = np.zeros((61, 83, 3), np.uint8)
    photo[..., 0] = mask * 255
    photo[..., 1] = rng.integers(0, 256, (61, 83))
    resized = np.asarray(Image.fromarray(photo).resize(size[::-1], Image.Resampling.NEAREST))
    assert np.array_equal(resize_mask(mask, size), resized[..., 0] == 255)

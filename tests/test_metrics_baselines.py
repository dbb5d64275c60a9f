"""Model-free baselines: shapes, known values, and their scores under the localisation metrics."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from xcnn import metrics
from xcnn.errors import XcnnError
from xcnn.methods import registry
from xcnn.metrics import baselines


def _photos(b: int, h: int, w: int, value: int = 128) -> np.ndarray:
    return np.full((b, h, w, 3), value, dtype=np.uint8)


def test_registry_paths_resolve_to_these_functions() -> None:
    for name in ("uniform", "centre", "edges"):
        assert registry.get(name).function() is getattr(baselines, name)


@pytest.mark.parametrize("name", ["uniform", "centre", "edges"])
def test_shape_and_dtype(name: str) -> None:
    out = getattr(baselines, name)(_photos(2, 9, 13))
    assert out.shape == (2, 1, 9, 13) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_uniform_scores_the_mask_fraction_exactly() -> None:
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[0, 2:5, 3:9] = True  # 18 %
    masks[1, :7] = True  # 70 %
    p = metrics.concentration(baselines.uniform(_photos(2, 10, 10)), masks)
    np.testing.assert_array_equal(p, metrics.chance_level(masks))
    assert p[0] == pytest.approx(0.18, abs=1e-15) and p[1] == pytest.approx(0.70, abs=1e-15)


def test_centre_peaks_at_the_centre_and_falls_to_exp_minus_half_at_sigma() -> None:
    g = baselines.centre(_photos(1, 41, 61))[0, 0]  # centre (20, 30) is a pixel
    assert np.unravel_index(g.argmax(), g.shape) == (20, 30) and g[20, 30] == pytest.approx(1.0)
    even = baselines.centre(_photos(1, 4, 6))[0, 0]  # centre (1.5, 2.5): the four middle pixels tie
    assert np.allclose(even[1:3, 2:4], even.max())
    # 61×40: σ = 40 / 4 = 10 pixels, centre row 30 is a pixel. Ten rows off the centre, every
    # column is at exp(-1/2) of its peak (the Gaussian is separable), and it is isotropic.
    g = baselines.centre(_photos(1, 61, 40))[0, 0].astype(np.float64)
    np.testing.assert_allclose(g[40] / g[30], math.exp(-0.5), rtol=1e-6)
    np.testing.assert_allclose(g[20] / g[30], math.exp(-0.5), rtol=1e-6)
    assert g[30, 19] == pytest.approx(math.exp(-(0.5**2) / 200), rel=1e-6)
    assert g[30 + 5, 19] == pytest.approx(math.exp(-(5**2 + 0.5**2) / 200), rel=1e-6)


def test_edges_is_zero_on_a_flat_photo_and_nan_scored() -> None:
    e = baselines.edges(_photos(1, 12, 12, value=77))
    assert not e.any()
    assert math.isnan(metrics.concentration(e, np.ones((1, 12, 12), dtype=bool))[0])


def test_edges_peaks_on_a_drawn_step_edge() -> None:
    photo = _photos(1, 16, 20, value=30)
    photo[0, :, 10:] = 200  # vertical step between columns 9 and 10
    e = baselines.edges(photo)[0, 0]
    assert set(np.flatnonzero(e.max(axis=0) > 0)) == {9, 10}  # Sobel's 3-wide support
    assert e[:, 9].min() == 1.0 and e[:, 10].min() == 1.0  # the maximum, on every row
    # Every channel counts through the luma: a step in blue alone is an edge at the same place.
    blue = _photos(1, 8, 8, 0)
    blue[0, :, 4:, 2] = 100
    assert set(np.flatnonzero(baselines.edges(blue)[0, 0].max(axis=0) > 0)) == {3, 4}


def test_edges_is_sobel_magnitude_of_the_luma() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)
    grey = photo[0].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    mag = np.hypot(ndimage.sobel(grey, 0, mode="reflect"), ndimage.sobel(grey, 1, mode="reflect"))
    np.testing.assert_allclose(baselines.edges(photo)[0, 0], mag / mag.max(), rtol=1e-6)


def test_bad_photo_shape_is_a_clear_error() -> None:
    with pytest.raises(XcnnError, match="B×H×W×3"):
        baselines.uniform(np.zeros((1, 3, 8, 8), dtype=np.uint8))


def test_metrics_modules_import_neither_torch_nor_upper_layers() -> None:
    code = (
        "import sys, xcnn.metrics, xcnn.metrics.baselines, xcnn.metrics.faithfulness, xcnn.metrics.sanity\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('xcnn.experiment', 'xcnn.report', 'xcnn.data'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

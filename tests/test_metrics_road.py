"""ROAD and Faithfulness Correlation against Quantus 0.6.0, given the same random draws."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.metrics import faithfulness as F

quantus = pytest.importorskip("quantus")
from quantus.functions import perturb_func  # noqa: E402

quantus_imputation: Any = perturb_func.noisy_linear_imputation  # typed for sequences; it takes arrays

KEYS = ["photo-a", "photo-b", "photo-c"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def _data(b: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn((b, 3, size, size), generator=g)
    relevance = torch.rand((b, 1, size, size), generator=g)  # tie-free: Quantus's argsort order is defined
    return x, relevance, torch.tensor([0, 3, 1][:b])


def _blob_order(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.argsort(((yy - 12.3) ** 2 + (xx - 19.1) ** 2).ravel())


@pytest.mark.parametrize("p", [1, 30, 70, 99])
def test_imputation_equals_quantus(p: int) -> None:
    rng = np.random.default_rng(p)
    image = rng.standard_normal((3, 32, 32))
    for order in (_blob_order(32), rng.permutation(32 * 32)):
        for idx in (order[:int(1024 * p / 100)], order[1024 - int(1024 * p / 100):]):
            ours = F.noisy_linear_imputation(image, idx, None)
            assert np.abs(ours - quantus_imputation(image, idx, noise=0.0)).max() < 1e-10
            assert np.array_equal(np.delete(ours.reshape(3, -1), idx, axis=1), np.delete(image.reshape(3, -1), idx, axis=1))


def test_imputation_noise_equals_quantus_given_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.random.default_rng(0).standard_normal((3, 32, 32))
    idx = _blob_order(32)[:300]
    draws = F.road_noise(5, "k", 3, 3, 300)
    monkeypatch.setattr(np.random, "randn", lambda *shape: draws if shape == (3, 300) else pytest.fail(str(shape)))
    assert np.abs(F.noisy_linear_imputation(image, idx, draws, 0.05) - quantus_imputation(image, idx, noise=0.05)).max() < 1e-10


def _road_by_hand(model: nn.Module, x: torch.Tensor, a: torch.Tensor, t: torch.Tensor, key: str, seed: int,
                  percentages: list[int], noise: float, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """One photo: Quantus's imputation (its randn fed our draws), argsort order, softmax of the target."""
    n = x.shape[-1] * x.shape[-2]
    order = np.argsort(-a.numpy().ravel())
    out = np.empty((len(percentages), 2))
    for j, p in enumerate(percentages):
        k = int(n * p / 100)
        for curve, idx in enumerate((order[:k], order[n - k:])):
            draws = F.road_noise(seed, key, 2 * j + curve, 3, k)
            monkeypatch.setattr(np.random, "randn", lambda *shape, d=draws: d)
            imputed = torch.from_numpy(quantus_imputation(x.double().numpy(), idx, noise=noise)).float()
            with torch.no_grad():
                out[j, curve] = torch.softmax(model(imputed[None]), 1)[0, t].item()
    return out


def test_road_equals_a_per_photo_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _net()
    x, a, t = _data()
    pct = [10, 50, 90]
    ours = F.road(model, F.Batch(x, t, KEYS), a, F.RoadSettings(seed=7, percentages=pct, noise=0.02, chunk=4))
    expected = np.stack([_road_by_hand(model, x[i], a[i], t[i], KEYS[i], 7, pct, 0.02, monkeypatch)
                         for i in range(3)])
    assert np.abs(ours["morf"].numpy() - expected[..., 0]).max() < 1e-6
    assert np.abs(ours["lerf"].numpy() - expected[..., 1]).max() < 1e-6
    assert torch.allclose(ours["gap"], (ours["lerf"] - ours["morf"]).mean(1))
    alone = F.road(model, F.Batch(x[1:2], t[1:2], KEYS[1:2]), a[1:2], F.RoadSettings(seed=7, percentages=pct, noise=0.02))
    assert torch.equal(alone["morf"][0], ours["morf"][1]) and torch.equal(alone["lerf"][0], ours["lerf"][1])


def test_road_refuses_bad_percentages() -> None:
    x, a, t = _data(1)
    with pytest.raises(XcnnError, match="percentages"):
        F.road(_net(), F.Batch(x, t, KEYS[:1]), a, F.RoadSettings(percentages=[0, 50]))


def _fc_quantus(model: nn.Module, x: torch.Tensor, a: torch.Tensor, t: torch.Tensor, key: str, seed: int,
                runs: int, size: int, monkeypatch: pytest.MonkeyPatch) -> float:
    """Quantus's FaithfulnessCorrelation on one photo, its np.random.choice fed our subsets."""
    picks = iter(F.subsets(seed, key, runs, x[0].numel(), size).numpy())
    monkeypatch.setattr(np.random, "choice", lambda *args, **kw: next(picks))
    metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, return_aggregate=False,
                                             disable_warnings=True)
    return float(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(), device="cpu")[0])


def test_faithfulness_correlation_equals_quantus_given_the_subsets(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _net()
    x, a, t = _data()
    ours = F.faithfulness_correlation(model, F.Batch(x, t, KEYS), a,
                                        F.CorrelationSettings(seed=3, nr_runs=12, subset_size=60, chunk=5))
    expected = [_fc_quantus(model, x[i:i + 1], a[i:i + 1], t[i:i + 1], KEYS[i], 3, 12, 60, monkeypatch)
                for i in range(3)]
    assert np.abs(ours.numpy() - np.array(expected)).max() < 1e-5
    alone = F.faithfulness_correlation(model, F.Batch(x[2:], t[2:], KEYS[2:]), a[2:],
                                         F.CorrelationSettings(seed=3, nr_runs=12, subset_size=60))
    # the same subsets whatever the batch; only the CPU convolutions' float32 sums may differ with the
    # batch's make-up (3e-7 seen with torch 2.14), while another draw would move r by far more
    assert alone[0].item() == pytest.approx(ours[2].item(), abs=1e-5)


def test_faithfulness_correlation_of_a_constant_map_is_nan() -> None:
    x, _, t = _data(1)
    out = F.faithfulness_correlation(_net(), F.Batch(x, t, KEYS[:1]), torch.ones(1, 1, 32, 32),
                                       F.CorrelationSettings(nr_runs=5, subset_size=10))
    assert torch.isnan(out).all()


def test_faithfulness_correlation_refuses_a_subset_larger_than_the_input() -> None:
    x, a, t = _data(1)
    with pytest.raises(XcnnError, match="subset_size"):
        F.faithfulness_correlation(_net(), F.Batch(x, t, KEYS[:1]), a, F.CorrelationSettings(subset_size=3 * 32 * 32 + 1))

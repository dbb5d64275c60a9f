"""Max/Avg-Sensitivity and the Local Lipschitz Estimate against Quantus 0.6.0 called one photo
at a time, its np.random fed the same perturbations."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.metrics import robustness as R

quantus = pytest.importorskip("quantus")

KEYS = ["a", "b", "c"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def _energy(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """r = Σ_c (∂y_t/∂x_c)², B×1×H×W: the attribution the metric compares."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x)
    return grad.square().sum(1, keepdim=True)


def _data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return _net(), torch.randn((3, 3, 24, 24), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 3])


def _quantus_one(metric: object, model: nn.Module, x: torch.Tensor, t: torch.Tensor, draws: list[np.ndarray],
                 sampler: str, monkeypatch: pytest.MonkeyPatch) -> float:
    feed = iter(draws)
    monkeypatch.setattr(np.random, sampler, lambda *args, **kw: next(feed)[None])

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
        return _energy(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets)).numpy()

    a = _energy(model, x, t).numpy()
    out = metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a, explain_func=explain,  # type: ignore[operator]
                 device="cpu")
    return float(out[0])


def _ours(fn: object, model: nn.Module, x: torch.Tensor, t: torch.Tensor, keys: Sequence[str], **kw: object) -> torch.Tensor:
    settings = (R.LipschitzSettings if fn is R.local_lipschitz_estimate else R.SensitivitySettings)(**kw)  # type: ignore[arg-type]
    return fn(lambda xs, ts, _: _energy(model, xs, ts), R.Batch(x, t, keys), _energy(model, x, t), settings)  # type: ignore[operator]


@pytest.mark.parametrize("name", ["MaxSensitivity", "AvgSensitivity"])
def test_sensitivity_equals_quantus_given_the_perturbations(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, t = _data()
    fn = R.max_sensitivity if name == "MaxSensitivity" else R.avg_sensitivity
    ours = _ours(fn, model, x, t, KEYS, seed=4, nr_samples=4, chunk=5)
    expected = []
    for i in range(3):
        draws = [R.perturbation("uniform", 4, KEYS[i], s, x.shape[1:], 0.2).reshape(-1).numpy() for s in range(4)]
        metric = getattr(quantus, name)(nr_samples=4, lower_bound=0.2, disable_warnings=True)
        expected.append(_quantus_one(metric, model, x[i:i + 1], t[i:i + 1], draws, "uniform", monkeypatch))
    assert np.abs(ours.numpy() - np.array(expected)).max() < 1e-5 * max(expected)
    alone = _ours(fn, model, x[1:2], t[1:2], KEYS[1:2], seed=4, nr_samples=4)
    assert alone[0].item() == pytest.approx(ours[1].item(), rel=1e-6)


def test_max_and_avg_sensitivity_share_their_copies() -> None:
    model, x, t = _data()
    per = _ours(R.sensitivities, model, x, t, KEYS, nr_samples=3)
    assert torch.equal(_ours(R.max_sensitivity, model, x, t, KEYS, nr_samples=3), per.amax(1))
    assert torch.allclose(_ours(R.avg_sensitivity, model, x, t, KEYS, nr_samples=3), per.mean(1))


def test_local_lipschitz_equals_quantus_given_the_perturbations(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, t = _data()
    ours = _ours(R.local_lipschitz_estimate, model, x, t, KEYS, seed=9, nr_samples=3, chunk=2)
    expected = []
    for i in range(3):
        draws = [R.perturbation("gaussian", 9, KEYS[i], s, x.shape[1:], 0.1).reshape(-1).numpy() for s in range(3)]
        metric = quantus.LocalLipschitzEstimate(nr_samples=3, perturb_std=0.1, disable_warnings=True)
        expected.append(_quantus_one(metric, model, x[i:i + 1], t[i:i + 1], draws, "normal", monkeypatch))
    assert np.abs(ours.numpy() - np.array(expected)).max() < 1e-5 * max(expected)


def test_an_all_zero_map_has_no_sensitivity() -> None:
    _, x, t = _data()
    out = R.max_sensitivity(lambda xs, ts, _: torch.zeros(len(xs), 1, 24, 24), R.Batch(x, t, KEYS),
                            torch.zeros(3, 1, 24, 24), R.SensitivitySettings(nr_samples=2))
    assert torch.isnan(out).all()


def test_explain_must_return_the_relevance_form() -> None:
    model, x, t = _data()
    with pytest.raises(XcnnError, match="relevance's form"):
        R.max_sensitivity(lambda xs, ts, _: torch.zeros(len(xs), 3, 24, 24), R.Batch(x, t, KEYS), _energy(model, x, t),
                          R.SensitivitySettings(nr_samples=1))

"""xcnn's randomisation similarities against Quantus 0.6.0's MPRT and RandomLogit, given the same
randomised models and the same other class."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from xcnn.metrics import sanity

quantus = pytest.importorskip("quantus")
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()


def _gradient(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The signed B×3×H×W gradient map; xcnn's measures read its energy r = Σ_c m_c²."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, t[:, None]).sum(), x)
    return grad


def _energy_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
    g = _gradient(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets).long())
    return g.square().sum(1, keepdim=True).numpy()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 4])


@pytest.mark.slow  # about 3 s on 2 busy cores
def test_mprt_layer_by_layer_equals_xcnn_spearman_on_the_same_randomised_models() -> None:
    model, (x, t) = _net(), _data()
    metric = quantus.MPRT(seed=42, disable_warnings=True)  # abs, normalise_by_max, Spearman of flattened maps
    scores = metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=_energy_explain(model, x.numpy(), t.numpy()),
                    explain_func=_energy_explain, device="cpu")
    original = _gradient(model, x, t)
    layers = 0
    # Quantus's own copies: every module with reset_parameters (BatchNorm included), output side
    # first, each reset after torch.manual_seed(seed + 1); cumulative on one deep copy.
    for name, randomised in PyTorchModel(model, channel_first=True).get_random_layer_generator(order="top_down", seed=42):
        ours = sanity.spearman_batch(original, _gradient(randomised, x, t))
        assert np.abs(ours - np.array(scores[name])).max() < 1e-9, name
        layers += 1
    assert layers == 4 and set(scores) == {"original", "0", "1", "3", "7"}
    assert np.abs(np.array(scores["0"]) - 1).max() > 0.05  # the last layers do change the maps


def test_random_logit_is_xcnns_class_dependence_ssim_given_the_same_class() -> None:
    model, (x, t) = _net(), _data()
    n_classes = 5
    # Quantus's draw: np.random.seed(42) per batch, then an index into the classes other than y.
    np.random.seed(42)
    picks = np.random.randint(0, n_classes - 1, len(t))
    other = torch.tensor([[c for c in range(n_classes) if c != y][p] for y, p in zip(t.tolist(), picks)])
    ours = sanity.ssim_batch(_gradient(model, x, t), _gradient(model, x, other))

    def unit_energy(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        r = _energy_explain(model, inputs, targets)
        lo, hi = r.min(axis=(1, 2, 3), keepdims=True), r.max(axis=(1, 2, 3), keepdims=True)
        return (r - lo) / (hi - lo)

    def ssim_2d(a: np.ndarray, b: np.ndarray, batched: bool = True, **_: Any) -> list[float]:
        return [quantus.similarity_func.ssim(aa.reshape(16, 16), bb.reshape(16, 16)) for aa, bb in zip(a, b)]

    def random_logit(**kw: Any) -> np.ndarray:
        metric = quantus.RandomLogit(num_classes=n_classes, seed=42, normalise=False, disable_warnings=True, **kw)
        return np.array(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(),
                               a_batch=unit_energy(model, x.numpy(), t.numpy()), explain_func=unit_energy, device="cpu"))

    # On the 2-D maps, min-max scaled (data range 1), Quantus's SSIM is xcnn's class-dependence SSIM ...
    assert np.abs(random_logit(similarity_func=ssim_2d) - ours).max() < 1e-6  # float32 maps there
    # ... while its default takes the SSIM of the flattened 1-D maps: another number.
    assert np.abs(random_logit() - ours).max() > 1e-3

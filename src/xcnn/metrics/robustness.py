"""Robustness of a map to small changes of the photo, after Quantus 0.6.0 (Hedström et al. 2023).

- ``max_sensitivity`` / ``avg_sensitivity`` (Yeh et al. 2019, https://arxiv.org/abs/1901.09392):
  the map recomputed on n copies x′ = x + u, u ~ U(−0.2, 0.2) per input value (Quantus's
  ``batch_uniform_noise`` with ``lower_bound`` = 0.2), and the max / mean over the copies of
  ‖a(x) − a(x′)‖₂ / ‖a(x)‖₂ (Frobenius norms of the flattened maps, unnormalised maps: Quantus's
  ``normalise=False``). Low is robust.
- ``local_lipschitz_estimate`` (Alvarez-Melis & Jaakkola 2018, https://arxiv.org/abs/1806.08049):
  copies x′ = x + ε, ε ~ N(0, 0.1²) per value (Quantus's ``batch_gaussian_noise``), and the max
  over the copies of ‖â(x) − â(x′)‖₂ / (‖x − x′‖₂ + 1e-10), each map â divided by its own
  max |a| (Quantus's default ``normalise_by_max``, here per map, not over the batch). Low is
  robust.

``explain(x, targets, keys)`` recomputes the attribution to compare, in the form the caller
scores (xcnn passes r = Σ_c m_c² of the method's map); ``relevance`` is that attribution for
the unperturbed x of the ``Batch`` (photos, targets, keys). Copy s of photo ``key`` is drawn by a
CPU generator seeded by (seed, stream, key, s) (``perturbation``), so a value never depends on
its batch; the n·B copies go through ``explain`` ``chunk`` at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics.forward import Batch as Batch
from xcnn.metrics.forward import check_chunk, noise_generator

if TYPE_CHECKING:
    import torch

# (B×C×H×W inputs, B targets, B photo keys) -> B×… attributions
Explain = Callable[["torch.Tensor", "torch.Tensor", Sequence[str]], "torch.Tensor"]

SENSITIVITY_BOUND = 0.2  # Quantus's lower_bound: U(−0.2, 0.2)
LIPSCHITZ_STD = 0.1  # Quantus's perturb_std
EPS = 1e-10  # Quantus's lipschitz_constant


def perturbation(kind: str, seed: int, key: str, sample: int, shape: Sequence[int], scale: float) -> torch.Tensor:
    """The float64 CPU noise of copy ``sample`` of photo ``key``: ``kind`` "uniform" draws
    U(−scale, scale) (stream "sensitivity"), "gaussian" N(0, scale²) (stream "lipschitz")."""
    import torch

    if kind == "uniform":
        g = noise_generator(seed, "sensitivity", key, sample)
        return torch.rand(tuple(shape), generator=g, dtype=torch.float64).mul_(2 * scale).sub_(scale)
    if kind == "gaussian":
        g = noise_generator(seed, "lipschitz", key, sample)
        return torch.randn(tuple(shape), generator=g, dtype=torch.float64).mul_(scale)
    raise XcnnError(f"unknown perturbation {kind!r}: use \"uniform\" or \"gaussian\"")


@dataclass(frozen=True)
class SensitivitySettings:
    """``nr_samples`` copies x + U(−lower_bound, lower_bound) per photo, drawn with ``seed``;
    ``chunk``: copies per ``explain`` call."""

    seed: int = 0
    nr_samples: int = 10
    lower_bound: float = SENSITIVITY_BOUND
    chunk: int = 16

    def __post_init__(self) -> None:
        _check_copies(self.nr_samples, self.lower_bound, self.chunk)

    def copies(self) -> _Copies:
        return _Copies("uniform", self.lower_bound, self.seed, self.nr_samples, self.chunk)


@dataclass(frozen=True)
class LipschitzSettings:
    """``nr_samples`` copies x + N(0, perturb_std²) per photo, drawn with ``seed``; ``chunk``:
    copies per ``explain`` call."""

    seed: int = 0
    nr_samples: int = 10
    perturb_std: float = LIPSCHITZ_STD
    chunk: int = 16

    def __post_init__(self) -> None:
        _check_copies(self.nr_samples, self.perturb_std, self.chunk)

    def copies(self) -> _Copies:
        return _Copies("gaussian", self.perturb_std, self.seed, self.nr_samples, self.chunk)


@dataclass(frozen=True)
class _Copies:
    kind: str  # "uniform" | "gaussian", see ``perturbation``
    scale: float
    seed: int
    nr_samples: int
    chunk: int


def _check_copies(nr_samples: int, scale: float, chunk: int) -> None:
    if nr_samples < 1:
        raise XcnnError(f"nr_samples must be at least 1, got {nr_samples!r}")
    if not scale > 0:
        raise XcnnError(f"the perturbation's size must be positive, got {scale!r}")
    check_chunk(chunk)


def _perturbed_maps(explain: Explain, batch: Batch, copies: _Copies, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B×n×(flattened attribution) maps of the perturbed copies, and B×n ‖x − x′‖₂ (float64)."""
    import torch

    x, keys, b, n = batch.x.detach(), batch.keys, batch.shape[0], copies.nr_samples
    items = [(i, s) for i in range(b) for s in range(n)]
    maps: torch.Tensor | None = None
    dist = torch.empty(len(items), dtype=torch.float64, device=x.device)
    tally = Tally(label, len(items))
    for start in range(0, len(items), copies.chunk):
        group = items[start:start + copies.chunk]
        index = torch.tensor([i for i, _ in group], device=x.device)
        noise = torch.stack([perturbation(copies.kind, copies.seed, keys[i], s, x.shape[1:], copies.scale)
                             for i, s in group])
        noisy = (x[index].double() + noise.to(x.device)).to(x.dtype)
        dist[start:start + len(group)] = (noisy.double() - x[index].double()).flatten(1).norm(dim=1)
        out = explain(noisy, batch.targets[index], [keys[i] for i, _ in group]).detach()
        if out.shape[0] != len(group):
            raise XcnnError(f"explain must return one map per input: {len(group)} inputs, shape {tuple(out.shape)}")
        if maps is None:
            maps = torch.empty((len(items), out[0].numel()), dtype=torch.float64, device=x.device)
        maps[start:start + len(group)] = out.reshape(len(group), -1).to(x.device, torch.float64)
        tally.add(len(group))
    assert maps is not None
    return maps.view(b, n, -1), dist.view(b, n)


def sensitivities(explain: Explain, batch: Batch, relevance: torch.Tensor,
                  settings: SensitivitySettings = SensitivitySettings()) -> torch.Tensor:
    """B×n float64 ‖a(x) − a(x′_s)‖₂ / ‖a(x)‖₂ for the n = ``nr_samples`` uniform copies
    (NaN for an all-zero a(x), as Quantus's 0/0)."""
    a = _flat(relevance, batch.shape[0])
    maps, _ = _perturbed_maps(explain, batch, settings.copies(), "sensitivity passes")
    _same_size(a, maps)
    ratio: torch.Tensor = (a[:, None] - maps).norm(dim=2) / a.norm(dim=1, keepdim=True)
    return ratio


def max_sensitivity(explain: Explain, batch: Batch, relevance: torch.Tensor,
                    settings: SensitivitySettings = SensitivitySettings()) -> torch.Tensor:
    """Max-Sensitivity, as Quantus 0.6.0's ``MaxSensitivity`` (``nanmax`` over the samples);
    float64 [B], low is robust. Shares its copies with ``avg_sensitivity`` (same seed)."""
    return _nan_reduce(sensitivities(explain, batch, relevance, settings), "max")


def avg_sensitivity(explain: Explain, batch: Batch, relevance: torch.Tensor,
                    settings: SensitivitySettings = SensitivitySettings()) -> torch.Tensor:
    """Avg-Sensitivity, as Quantus 0.6.0's ``AvgSensitivity`` (``nanmean`` over the samples);
    float64 [B], low is robust."""
    return _nan_reduce(sensitivities(explain, batch, relevance, settings), "mean")


def local_lipschitz_estimate(explain: Explain, batch: Batch, relevance: torch.Tensor,
                             settings: LipschitzSettings = LipschitzSettings()) -> torch.Tensor:
    """Local Lipschitz Estimate, as Quantus 0.6.0's ``LocalLipschitzEstimate`` with
    ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``: max over n Gaussian copies of
    ‖â(x) − â(x′)‖₂ / (‖x − x′‖₂ + 1e-10), â = a / max|a| per map (an all-zero map stays
    zero). float64 [B], low is robust."""
    a = _by_max(_flat(relevance, batch.shape[0]))
    maps, dist = _perturbed_maps(explain, batch, settings.copies(), "local Lipschitz passes")
    _same_size(a, maps)
    ratio = (a[:, None] - _by_max(maps)).norm(dim=2) / (dist + EPS)
    return _nan_reduce(ratio, "max")


def _flat(relevance: torch.Tensor, b: int) -> torch.Tensor:
    import torch

    if relevance.shape[0] != b:
        raise XcnnError(f"need one attribution per image: {b} images, relevance of shape {tuple(relevance.shape)}")
    return relevance.detach().reshape(b, -1).to(torch.float64)


def _same_size(a: torch.Tensor, maps: torch.Tensor) -> None:
    if maps.shape[-1] != a.shape[-1]:
        raise XcnnError(f"explain returned maps of {maps.shape[-1]} values, the relevance has {a.shape[-1]}: "
                        "explain must return the attribution in the relevance's form")


def _by_max(a: torch.Tensor) -> torch.Tensor:
    """Each map (last axis) divided by its max |a|; an all-zero one unchanged (as Quantus)."""
    import torch

    top = a.abs().amax(dim=-1, keepdim=True)
    return a / top.where(top > 0, torch.ones_like(top))


def _nan_reduce(values: torch.Tensor, how: str) -> torch.Tensor:
    """NumPy's nanmax / nanmean over the samples (NaN only where every sample is NaN)."""
    import torch

    if how == "mean":
        return values.nanmean(dim=1)
    nan = values.isnan()
    top = values.masked_fill(nan, -torch.inf).amax(dim=1)
    return top.where(~nan.all(dim=1), torch.full_like(top, float("nan")))

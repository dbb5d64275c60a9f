"""The field's faithfulness and robustness metrics as model checks (Quantus's categories):
ROAD, Faithfulness Correlation, Average Drop / Increase in Confidence, Max- and Avg-Sensitivity
and the Local Lipschitz Estimate. Each is a thin layer over the batched functions of
``faithfulness`` and ``robustness``; docs/METHOD.md §6.1 gives their definitions and where they
differ from Quantus.

All "maps"-scope checks: they run beside the records on the first ``faithfulness_photos`` pairs.
Every metric reads the per-pixel energy r = Σ_c m_c² of a map (B×1×H×W), except the confidence
metrics, which multiply the photo by the map scaled to [0, 1] (``faithfulness.confidence_scale``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xcnn.metrics import robustness as ro
from xcnn.metrics.checks import CheckContext, whole_number
from xcnn.metrics.confidence import confidence as confidence_of
from xcnn.metrics.correlation import CorrelationSettings
from xcnn.metrics.correlation import faithfulness_correlation as correlation_of
from xcnn.metrics.forward import Batch
from xcnn.metrics.road import RoadSettings, road_problem
from xcnn.metrics.road import road as road_of
from xcnn.registry import CheckRow, Score, model_check


def check_photos(photos: int | None) -> None:
    if photos is not None and (isinstance(photos, bool) or not isinstance(photos, int) or photos < 1):
        raise ValueError(f"photos must be a whole number >= 1, or left out for every pair, got {photos!r}")


def check_params(params: Any, name: str, whole: dict[str, int], positive: tuple[str, ...] = ()) -> None:
    """What every parameter dataclass below checks: ``photos`` (none or a whole number >= 1), each
    field of ``whole`` a whole number >= its value, each of ``positive`` a number > 0."""
    check_photos(params.photos)
    for key, least in whole.items():
        whole_number(getattr(params, key), f"{name} {key}", least)
    for key in positive:
        if not getattr(params, key) > 0:
            raise ValueError(f"{name} {key} must be > 0, got {getattr(params, key)!r}")


def batch(ctx: CheckContext) -> Batch:
    """The context's photos, targets (on the photos' device) and keys as the metrics take them."""
    return Batch(ctx.images, ctx.targets.to(ctx.images.device), list(ctx.keys))


def relevance(ctx: CheckContext, method: str) -> torch.Tensor:
    """r = Σ_c m_c² of the method's maps, B×1×H×W float32 on the images' device."""
    m = torch.from_numpy(np.ascontiguousarray(ctx.maps[method])).to(ctx.images.device)
    return (m.float() ** 2).sum(dim=1, keepdim=True)


def _rows(values: torch.Tensor, method: str, test: str, measure: str, step: int | None = None) -> Iterator[CheckRow]:
    for i, v in enumerate(values.detach().double().cpu().tolist()):
        yield CheckRow(i, method, test, measure, float(v), step)


# --- ROAD ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoadParams:
    percentages: tuple[float, ...] = field(default=(10.0, 30.0, 50.0, 70.0, 90.0), metadata={
        "help": "shares of the pixels removed, in %, most relevant first (MoRF) and least (LeRF)"})
    noise: float = field(default=0.01, metadata={"help": "std of the noise added to the imputed values"})
    photos: int | None = field(default=None, metadata={
        "help": "on the first N of the faithfulness_photos pairs (none: all of them)"})

    def __post_init__(self) -> None:
        check_params(self, "road", {})
        problem = road_problem(self.percentages, self.noise)
        if problem:
            raise ValueError(problem)


@model_check("road", label="ROAD", category="faithfulness", paper="Rong et al. 2022", params=RoadParams,
             scores=(Score("road", "gap", "ROAD gap LeRF − MoRF (higher is better)"),))
def road(ctx: CheckContext) -> Iterator[CheckRow]:
    """MoRF and LeRF curves with noisy linear imputation (target's softmax probability at each
    percentage, steps 0..P−1) and their gap, the mean of LeRF − MoRF (step null)."""
    p = ctx.params or RoadParams()
    for m in ctx.methods:
        out = road_of(ctx.run, batch(ctx), relevance(ctx, m),
                      RoadSettings(seed=ctx.seed, percentages=p.percentages, noise=p.noise))
        yield from _rows(out["gap"], m, "road", "gap")
        for k in range(len(p.percentages)):
            yield from _rows(out["morf"][:, k], m, "road", "morf", k)
            yield from _rows(out["lerf"][:, k], m, "road", "lerf", k)


# --- Faithfulness Correlation ------------------------------------------------------------------

@dataclass(frozen=True)
class CorrelationParams:
    runs: int = field(default=100, metadata={"help": "random subsets per photo (one forward pass each)"})
    subset_size: int = field(default=224, metadata={"help": "values set to the baseline per subset, of C·H·W"})
    photos: int | None = field(default=None, metadata={
        "help": "on the first N of the faithfulness_photos pairs (none: all of them)"})

    def __post_init__(self) -> None:
        check_params(self, "faithfulness_correlation", {"runs": 2, "subset_size": 1})


@model_check("faithfulness_correlation", label="Faithfulness correlation", category="faithfulness",
             paper="Bhatt et al. 2020", params=CorrelationParams,
             scores=(Score("faithfulness_correlation", "pearson", "Faithfulness correlation (higher is better)"),))
def faithfulness_correlation(ctx: CheckContext) -> Iterator[CheckRow]:
    """Pearson correlation of the relevance of random subsets with the target logit's drop when
    they are set to the photo's minimum."""
    p = ctx.params or CorrelationParams()
    for m in ctx.methods:
        values = correlation_of(ctx.run, batch(ctx), relevance(ctx, m),
                                CorrelationSettings(seed=ctx.seed, nr_runs=p.runs, subset_size=p.subset_size))
        yield from _rows(values, m, "faithfulness_correlation", "pearson")


# --- Average Drop and Increase in Confidence --------------------------------------------------

@model_check("confidence", label="Average drop / increase in confidence", category="faithfulness",
             paper="Chattopadhay et al. 2018",
             scores=(Score("average_drop", "drop", "Average drop (lower is better)", higher_is_better=False),
                     Score("increase_in_confidence", "increase", "Increase in confidence (higher is better)")))
def confidence(ctx: CheckContext) -> Iterator[CheckRow]:
    """The target's softmax probability for the photo times the map scaled to [0, 1], against the
    photo's: the relative drop, and whether it rose."""
    for m in ctx.methods:
        maps = torch.from_numpy(np.ascontiguousarray(ctx.maps[m])).to(ctx.images.device).float()
        out = confidence_of(ctx.run, ctx.images, maps, ctx.targets.to(ctx.images.device))
        yield from _rows(out["average_drop"], m, "average_drop", "drop")
        yield from _rows(out["increase_in_confidence"], m, "increase_in_confidence", "increase")


# --- robustness: the map recomputed on perturbed photos ---------------------------------------

class _Maps:
    """Maps of perturbed photos for every method at once: the perturbations depend on the photo,
    never on the method, so each perturbed batch is explained once for all of the run's methods."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.cache: dict[str, dict[str, torch.Tensor]] = {}

    def of(self, method: str) -> ro.Explain:
        def explain(x: torch.Tensor, targets: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
            digest = hashlib.sha1(x.detach().cpu().numpy().tobytes())
            digest.update(repr((targets.tolist(), list(keys))).encode())
            key = digest.hexdigest()
            if key not in self.cache:
                maps = self.ctx.explain(x, targets, keys)
                self.cache[key] = {m: (torch.from_numpy(v).to(x.device).float() ** 2).sum(dim=1, keepdim=True)
                                   for m, v in maps.items()}
            return self.cache[key][method]
        return explain


@dataclass(frozen=True)
class SensitivityParams:
    samples: int = field(default=10, metadata={"help": "perturbed copies per photo, each explained again"})
    radius: float = field(default=0.2, metadata={"help": "uniform noise in [-radius, radius] (Quantus's lower_bound)"})
    photos: int | None = field(default=None, metadata={
        "help": "on the first N of the faithfulness_photos pairs (none: all of them)"})

    def __post_init__(self) -> None:
        check_params(self, "sensitivity", {"samples": 1}, ("radius",))


@model_check("sensitivity", label="Max- and Avg-Sensitivity", category="robustness", paper="Yeh et al. 2019",
             params=SensitivityParams,
             scores=(Score("max_sensitivity", "value", "Max-sensitivity (lower is better)", higher_is_better=False),
                     Score("avg_sensitivity", "value", "Avg-sensitivity (lower is better)", higher_is_better=False)))
def sensitivity(ctx: CheckContext) -> Iterator[CheckRow]:
    """‖a(x) − a(x′)‖ / ‖a(x)‖ over uniformly perturbed copies x′: the max and the mean."""
    p = ctx.params or SensitivityParams()
    maps = _Maps(ctx)
    for m in ctx.methods:
        s = ro.sensitivities(maps.of(m), batch(ctx), relevance(ctx, m),
                             ro.SensitivitySettings(seed=ctx.seed, nr_samples=p.samples, lower_bound=p.radius))
        yield from _rows(s.amax(dim=1), m, "max_sensitivity", "value")
        yield from _rows(s.nanmean(dim=1), m, "avg_sensitivity", "value")


@dataclass(frozen=True)
class LipschitzParams:
    samples: int = field(default=10, metadata={"help": "perturbed copies per photo, each explained again"})
    std: float = field(default=0.1, metadata={"help": "std of the Gaussian perturbation"})
    photos: int | None = field(default=None, metadata={
        "help": "on the first N of the faithfulness_photos pairs (none: all of them)"})

    def __post_init__(self) -> None:
        check_params(self, "local_lipschitz", {"samples": 1}, ("std",))


@model_check("local_lipschitz", label="Local Lipschitz estimate", category="robustness",
             paper="Alvarez-Melis & Jaakkola 2018", params=LipschitzParams,
             scores=(Score("local_lipschitz", "value", "Local Lipschitz estimate (lower is better)",
                           higher_is_better=False),))
def local_lipschitz(ctx: CheckContext) -> Iterator[CheckRow]:
    """max over perturbed copies of ‖a(x) − a(x′)‖ / ‖x − x′‖ (maps scaled by their maximum)."""
    p: Any = ctx.params or LipschitzParams()
    maps = _Maps(ctx)
    for m in ctx.methods:
        values = ro.local_lipschitz_estimate(maps.of(m), batch(ctx), relevance(ctx, m),
                                             ro.LipschitzSettings(seed=ctx.seed, nr_samples=p.samples, perturb_std=p.std))
        yield from _rows(values, m, "local_lipschitz", "value")

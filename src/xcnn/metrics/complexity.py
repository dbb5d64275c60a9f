"""Complexity of a saliency map (Quantus's complexity category): how spread out its relevance is.

Each reads the relevance r = Σ_c m_c² of a map (for a heat map, m²), as P does, and equals
Quantus 0.6.0's class given a = r (B×1×H×W), called one sample at a time: Quantus divides a by
its maximum first (normalise_by_max), and its constants (1e-7, 1e-12, eps) act on that scale.
The Gini index shares the sort of ``localisation.ranked`` with the rank-based localisation
metrics; the entropy and the effective complexity need none. An
all-zero or non-finite map gives NaN (Quantus: a Gini of 0, an entropy of NaN, a count of 0).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from xcnn.metrics.localisation import ArrayLike, _ranked, _relevances
from xcnn.registry import MetricContext, metric

EFFECTIVE_COMPLEXITY_EPS = 1e-5  # Quantus's default ([metrics.effective_complexity] eps)


def _scaled(values: dict[str, np.ndarray], key: str) -> np.ndarray:
    """values[key] / max r in float64 (Quantus's normalise_by_max), once per dict: the sorted
    ``v`` of ``ranked`` or the flat ``r`` of ``relevances``; all-zero rows stay zero."""
    name = f"scaled_{key}"
    if name not in values:
        x = values[key]
        top = np.where(values["valid"], values["top"], 1.0).astype(np.float64)
        values[name] = x.astype(np.float64) / top[:, None]
    return values[name]


@functools.lru_cache(maxsize=8)
def _gini_weights(n: int) -> np.ndarray:
    weights = 2.0 * np.arange(1, n + 1) - n - 1  # Σ (2i − n − 1) q_(i), ascending order
    weights.flags.writeable = False
    return weights


def _on_valid(rk: dict[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    return np.where(rk["valid"], values, np.nan)


def gini(rk: dict[str, np.ndarray]) -> np.ndarray:
    """Gini index of r / max r + 1e-7 (Chalasani et al. 2020): 0 for a uniform map, towards 1 for
    one bright pixel. ``rk``: ``localisation.ranked``'s sorted relevance."""
    q = _scaled(rk, "v")
    n = q.shape[1]
    # Quantus's offset of 1e-7 after its normalisation: the weights sum to 0, so it only adds
    # n · 1e-7 below. A row-wise sum, not q @ weights: BLAS rounds differently with the batch.
    with np.errstate(invalid="ignore"):  # non-finite rows: NaN, masked below
        return _on_valid(rk, (q * _gini_weights(n)).sum(axis=1) / (n * (q.sum(axis=1) + n * 1e-7)))


def entropy(rel: dict[str, np.ndarray]) -> np.ndarray:
    """Shannon entropy (nats) of p = r / Σ r, as Quantus: −Σ p log(p + 1e-12) (Bhatt et al. 2020).
    ``rel``: ``localisation.relevances`` (no sort needed)."""
    q = _scaled(rel, "r")
    with np.errstate(invalid="ignore", divide="ignore"):  # all-zero rows: NaN, masked below
        p = q / q.sum(axis=1, keepdims=True)
    return _on_valid(rel, -(p * np.log(p + 1e-12)).sum(axis=1))


def effective_complexity(rel: dict[str, np.ndarray], eps: float = EFFECTIVE_COMPLEXITY_EPS) -> np.ndarray:
    """Pixels whose r / max r exceeds eps (Nguyen & Rodríguez Martínez 2020). ``rel``:
    ``localisation.relevances`` (no sort needed)."""
    return _on_valid(rel, (_scaled(rel, "r") > eps).sum(axis=1).astype(np.float64))


@metric("sparseness", label="Sparseness (Gini)", category="complexity", paper="Chalasani et al. 2020")
def sparseness(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Gini index of the relevance (Quantus Sparseness): higher is sparser, as Quantus scores it."""
    return gini(_ranked(maps, masks, ctx))


@metric("complexity", label="Complexity (entropy)", higher_is_better=False, category="complexity",
        paper="Bhatt et al. 2020")
def complexity(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Entropy of the relevance's share per pixel (Quantus Complexity): lower is simpler."""
    return entropy(_relevances(maps, ctx))


@dataclass(frozen=True)
class EffectiveComplexityParams:
    eps: float = field(default=EFFECTIVE_COMPLEXITY_EPS,
                       metadata={"help": "a pixel counts when r / max r is above this (Quantus's default)"})

    def __post_init__(self) -> None:
        if not 0 <= self.eps < 1:
            raise ValueError(f"effective_complexity eps must be in [0, 1), got {self.eps!r}")


@metric("effective_complexity", label="Effective complexity", higher_is_better=False, category="complexity",
        paper="Nguyen & Rodríguez Martínez 2020", params=EffectiveComplexityParams)
def effective(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Pixels above eps (default 1e-5) of the maximum relevance (Quantus EffectiveComplexity): lower is simpler."""
    return effective_complexity(_relevances(maps, ctx), (ctx.params or EffectiveComplexityParams()).eps)

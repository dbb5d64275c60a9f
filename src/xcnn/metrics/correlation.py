"""Faithfulness Correlation (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631), after Quantus
0.6.0's ``FaithfulnessCorrelation``. A pure batched function of a ``forward`` callable
(``xcnn.metrics.forward``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics.forward import Batch, Forward, check_chunk, noise_generator, pearson, target_logit

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CorrelationSettings:
    """``seed`` of the subsets; ``nr_runs`` random subsets of ``subset_size`` input values per
    photo; ``chunk``: perturbed inputs per forward call."""

    seed: int = 0
    nr_runs: int = 100
    subset_size: int = 224
    chunk: int = 32

    def __post_init__(self) -> None:
        if self.nr_runs < 2 or self.subset_size < 1:
            raise XcnnError(f"faithfulness correlation needs nr_runs >= 2 and subset_size >= 1, "
                            f"got {self.nr_runs} and {self.subset_size}")
        check_chunk(self.chunk)


def subsets(seed: int, key: str, nr_runs: int, size: int, subset_size: int) -> torch.Tensor:
    """nr_runs × subset_size LongTensor: run r's subset of ``size`` values of one photo for
    Faithfulness Correlation, drawn without replacement by a generator seeded by (seed, key, r)."""
    import torch

    return torch.stack([torch.randperm(size, generator=noise_generator(seed, "faithfulness_correlation", key, r))
                        [:subset_size] for r in range(nr_runs)])


def faithfulness_correlation(forward: Forward, batch: Batch, relevance: torch.Tensor,
                             settings: CorrelationSettings = CorrelationSettings()) -> torch.Tensor:
    """For ``nr_runs`` random subsets S of ``subset_size`` of the C·H·W input values, the Pearson
    correlation over the runs between Σ_{v∈S} a_v and the drop in the target's logit
    f(x) − f(x with S set to x.min()).

    ``relevance``: B×1×H×W attributions, broadcast to x's C channels as Quantus does (a pixel's
    value counts once per channel drawn), or B×C×H×W. Subsets come from ``subsets(seed, key, …)``.
    Returns float64 [B] on x's device (NaN when either side is constant). High is faithful.
    """
    import torch

    b, c, h, w = batch.shape
    x, runs, size = batch.x.detach(), settings.nr_runs, settings.subset_size
    a = batch.relevance(relevance, per_channel=True).expand(b, c, h, w).reshape(b, -1).to(torch.float64)
    if size > c * h * w:
        raise XcnnError(f"faithfulness correlation needs subset_size <= C·H·W = {c * h * w}, got {size}")
    flat = x.reshape(b, -1)
    black = flat.min(dim=1).values
    picks = torch.stack([subsets(settings.seed, k, runs, c * h * w, size) for k in batch.keys]).to(x.device)  # B×R×S
    sums = a.gather(1, picks.reshape(b, -1)).view(b, runs, size).sum(dim=2)
    targets = batch.targets.to(x.device)
    logit = target_logit(forward, x, targets)
    drops = torch.empty(b * runs, dtype=torch.float64, device=x.device)
    items = torch.arange(b * runs, device=x.device)
    tally = Tally("faithfulness correlation passes", b * runs)
    for start in range(0, b * runs, settings.chunk):
        item = items[start:start + settings.chunk]
        i = item // runs
        inputs = flat[i].clone()
        inputs.scatter_(1, picks.view(b * runs, size)[item], black[i, None].expand(-1, size))
        drops[item] = logit[i] - target_logit(forward, inputs.view(-1, c, h, w), targets[i])
        tally.add(len(item))
    return pearson(sums, drops.view(b, runs))

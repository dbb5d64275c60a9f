"""ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449), after Quantus 0.6.0 (Hedström et al.
2023): remove the p % most (MoRF) or least (LeRF) relevant pixels, impute them by noisy linear
imputation, and read the target's probability. A pure batched function of a ``forward`` callable
(``xcnn.metrics.forward``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics.forward import Batch, Forward, check_chunk, noise_generator, target_probability

if TYPE_CHECKING:
    import torch

ROAD_PERCENTAGES = (10, 30, 50, 70, 90)
# Quantus's noisy_linear_imputation (after Rong et al.'s road_evaluation): each removed pixel is
# the weighted mean of its 8 neighbours (4-neighbours 1/6, diagonals 1/12), removed neighbours
# being unknowns of the same linear system.
_ROAD_STENCIL = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                 ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def road_problem(percentages: Sequence[float], noise: float) -> str | None:
    """What is wrong with ROAD's percentages and noise (None: nothing); the check's parameters and
    ``RoadSettings`` both ask it."""
    if not percentages or not all(0 < p < 100 for p in percentages):
        return f"road percentages must be numbers in (0, 100), got {list(percentages)!r}"
    if not noise >= 0:
        return f"road noise must be >= 0, got {noise!r}"
    return None


@dataclass(frozen=True)
class RoadSettings:
    """``seed`` of the tie order and the noise; ``percentages`` of the pixels removed; ``noise``:
    the std of the noise added to the imputed values; ``chunk``: imputed inputs per forward call."""

    seed: int = 0
    percentages: Sequence[float] = ROAD_PERCENTAGES
    noise: float = 0.01
    chunk: int = 32

    def __post_init__(self) -> None:
        problem = road_problem([float(p) for p in self.percentages], self.noise)
        if problem:
            raise XcnnError(problem)
        check_chunk(self.chunk)


def road_noise(seed: int, key: str, sample: int, channels: int, removed: int) -> np.ndarray:
    """The C×K standard normal draws ROAD adds (times ``noise``) to the K imputed values of one
    photo's imputation number ``sample`` = 2·(percentage index) + (0 MoRF | 1 LeRF); float64."""
    import torch

    g = noise_generator(seed, "road", key, sample)
    return torch.randn((channels, removed), generator=g, dtype=torch.float64).numpy()


def noisy_linear_imputation(image: np.ndarray, indices: np.ndarray, draws: np.ndarray | None = None,
                            noise: float = 0.01) -> np.ndarray:
    """Quantus 0.6.0's ``noisy_linear_imputation(image, indices, noise)`` for one C×H×W image
    and H·W pixel indices, with its ``np.random.randn`` replaced by ``draws`` (C×K; None: no
    noise). The same sparse system, assembled in one go (COO rather than Quantus's lil_matrix,
    the slow part of its imputation) and solved for all channels at once by SuperLU with
    COLAMD, as ``spsolve``. float64. (A matrix-free conjugate gradient reached 1e-10 at 32 px
    but float64 convolutions made it far slower than SuperLU on the CPU at 224 px.)"""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    c, h, w = image.shape
    flat = image.reshape(c, h * w).astype(np.float64)
    idx = np.asarray(indices, dtype=np.int64)
    k = idx.size
    out = flat.copy()
    if k == 0:
        return out.reshape(image.shape)
    known = np.ones(h * w, dtype=bool)
    known[idx] = False
    var = np.zeros(h * w, dtype=np.int64)
    var[idx] = np.arange(k)
    row, col = idx // w, idx % w
    rhs = np.zeros((k, c))
    diag = np.ones(k)
    rows, cols, vals = [np.arange(k)], [np.arange(k)], []
    for (dr, dc), weight in _ROAD_STENCIL:
        valid = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
        where = np.flatnonzero(valid)
        nb = idx[where] + dr * w + dc
        inside = known[nb]
        rhs[where[inside]] -= weight * flat[:, nb[inside]].T
        rows.append(where[~inside])
        cols.append(var[nb[~inside]])
        vals.append(np.full(int((~inside).sum()), weight))
        diag[~valid] -= weight  # neighbours outside the image do not count
    data = np.concatenate([-diag, *vals])
    a = csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    solution = splu(a, permc_spec="COLAMD").solve(rhs).T
    out[:, idx] = solution if draws is None else solution + noise * draws
    return out.reshape(image.shape)


def road(forward: Forward, batch: Batch, relevance: torch.Tensor,
         settings: RoadSettings = RoadSettings()) -> dict[str, torch.Tensor]:
    """ROAD's MoRF and LeRF curves of B photos.

    ``relevance``: B×1×H×W (or B×C'×H×W, summed over channels) per-pixel attribution a, ranked
    descending with ties in an order seeded by (seed, key); at percentage p, K = int(H·W·p/100)
    pixels are removed, as in Quantus. The imputation of each is ``noisy_linear_imputation`` with
    ``road_noise`` draws: one sparse solve per (photo, percentage, curve), on the CPU; the 2·B·P
    imputed inputs go through ``forward`` ``settings.chunk`` at a time.

    Returns float64 tensors on x's device: ``morf`` and ``lerf`` B×P (target softmax
    probability), ``morf_top1`` and ``lerf_top1`` B×P (1. where the argmax is the target:
    Quantus ROAD's MoRF quantity), and ``gap`` [B] = mean over p of (lerf − morf): high means
    the map's ranking separates what the model uses from what it does not.
    """
    import torch

    b, _, h, w = batch.shape
    x = batch.x
    a = batch.relevance(relevance, per_channel=False).sum(dim=1, keepdim=True)
    pcts = [float(p) for p in settings.percentages]
    n = h * w
    counts = [int(n * p / 100) for p in pcts]  # Quantus: int(a_size * p / 100)
    jobs = [(i, j, curve) for i in range(b) for j in range(len(pcts)) for curve in (0, 1)]
    prob = torch.empty(len(jobs), dtype=torch.float64)
    top1 = torch.empty(len(jobs), dtype=torch.float64)
    order = ranked_pixels(a, settings.seed, batch.keys, "road").cpu().numpy()
    image = x.detach().to("cpu", torch.float64).numpy()
    tally = Tally("ROAD imputations", len(jobs))
    for start in range(0, len(jobs), settings.chunk):
        group = jobs[start:start + settings.chunk]
        imputed = []
        for i, j, curve in group:  # one sparse solve per image: the only per-image loop
            k = counts[j]
            idx = order[i, :k] if curve == 0 else order[i, n - k:]
            draws = road_noise(settings.seed, batch.keys[i], 2 * j + curve, image.shape[1], k) \
                if settings.noise > 0 else None
            imputed.append(noisy_linear_imputation(image[i], idx, draws, settings.noise))
            tally.add()
        inputs = torch.from_numpy(np.stack(imputed)).to(x.device, x.dtype)
        p, hit = target_probability(forward, inputs, batch.targets[[i for i, _, _ in group]].to(x.device))
        prob[start:start + len(group)] = p.cpu()
        top1[start:start + len(group)] = hit.cpu()
    prob = prob.view(b, len(pcts), 2).to(x.device)
    top1 = top1.view(b, len(pcts), 2).to(x.device)
    morf, lerf = prob[..., 0], prob[..., 1]
    return {"morf": morf, "lerf": lerf, "morf_top1": top1[..., 0], "lerf_top1": top1[..., 1],
            "gap": (lerf - morf).mean(dim=1)}


def ranked_pixels(relevance: torch.Tensor, seed: int, keys: Sequence[str], stream: str) -> torch.Tensor:
    """B×N (N = H·W) pixel indices by descending B×1×H×W ``relevance``; equal values in a
    random order seeded by (seed, stream, key). On relevance's device."""
    import torch

    b = relevance.shape[0]
    flat = relevance.reshape(b, -1)
    tiebreak = torch.stack([torch.rand(flat.shape[1], generator=noise_generator(seed, stream, k, 0))
                            for k in keys]).to(flat.device)
    shuffle = tiebreak.argsort(dim=1)
    ranked = flat.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
    return shuffle.gather(1, ranked)

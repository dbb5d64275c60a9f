"""RISE (Petsiuk et al. 2018): the class probability of the photo seen through random masks,
averaged with the masks as weights.

In the paper's form: N binary grids of c×c cells, each cell 1 with probability p; each grid is
upsampled bilinearly to (c+1)·⌈H/c⌉ × (c+1)·⌈W/c⌉ and cropped to H×W at a random shift in
[0, ⌈H/c⌉) × [0, ⌈W/c⌉); S = 1/(N·p) Σ_i softmax(f(x ⊙ M_i))_c · M_i, x in the model's input
space. The upsampling is the paper's code's (skimage ``resize(order=1, mode="reflect")``): pixel
centres at half steps, the grid mirrored at its edges. Being separable, it is a product of
interpolation matrices, so a mask is cropped rows of one times the grid times cropped rows of
the other: no upsampled mask larger than H×W is ever made.

Seeding: grid and shift of mask i of a photo come from a generator seeded by (``seed``, the
photo's key, i) through SHA-256, so a map never depends on its batch, its chunking or N's other
masks. The grids are drawn first (c² numbers a mask) and the masks made chunk by chunk: the 4000
masks of one 224² photo would take 800 MB.

Cost: N no-grad forwards per photo, all photos' masks in one list of items run in chunks sized
to ``ctx.memory_mb``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from xcnn.methods.context import Context, to_heat
from xcnn.methods.passes import Tally
from xcnn.methods.sampling import chunk_items, even_chunks, footprint, noise_seed, plain_torch
from xcnn.registry import method

log = logging.getLogger(__name__)


def _whole(value: object, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"rise {name} must be a whole number >= {least}, got {value!r}")


@dataclass(frozen=True)
class RISEParams:
    n: int = field(default=4000, metadata={"help": "random masks per photo"})
    cells: int = field(default=7, metadata={"help": "grid cells along each side of a mask"})
    p: float = field(default=0.5, metadata={"help": "probability that a cell is kept"})
    # mask i of photo key comes from a generator seeded by (seed, key, i): no batch changes a map
    seed: int = field(default=0, metadata={"help": "mask seed"})

    def __post_init__(self) -> None:
        _whole(self.n, "n", 1)
        _whole(self.cells, "cells", 1)
        _whole(self.seed, "seed", 0)
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 < self.p <= 1:
            raise ValueError(f"rise p must be a probability in (0, 1], got {self.p!r}")


def _interpolation(cells: int, length: int) -> torch.Tensor:
    """length×cells matrix of bilinear upsampling from ``cells`` to ``length`` (half-pixel centres,
    mirrored edges: scipy's zoom with grid_mode=True, mode="mirror", as skimage's resize uses it)."""
    source = (torch.arange(length, dtype=torch.float64) + 0.5) * cells / length - 0.5
    low = source.floor()
    frac = source - low
    matrix = torch.zeros(length, cells, dtype=torch.float64)
    for index, weight in ((low.long(), 1 - frac), (low.long() + 1, frac)):
        index = torch.where(index < 0, -index, index)
        index = torch.where(index > cells - 1, 2 * (cells - 1) - index, index).clamp(0, cells - 1)
        matrix.index_put_((torch.arange(length), index), weight, accumulate=True)
    return matrix


@dataclass(frozen=True)
class _Draws:
    """The random part of masks: grids n×c×c (0/1) and shifts n×2 (rows, columns)."""

    grids: torch.Tensor
    shifts: torch.Tensor


def _draw(n: int, cells: int, p: float, cell: tuple[int, int], seed: int, key: str) -> _Draws:
    grids = torch.empty(n, cells, cells)
    shifts = torch.empty(n, 2, dtype=torch.long)
    for i in range(n):
        generator = torch.Generator().manual_seed(noise_seed(seed, key, i))
        grids[i] = (torch.rand(cells, cells, generator=generator) < p).float()
        shifts[i, 0] = torch.randint(0, cell[0], (), generator=generator)
        shifts[i, 1] = torch.randint(0, cell[1], (), generator=generator)
    return _Draws(grids, shifts)


class _Masker:
    """Makes the masks of given draws at one image size, chunk by chunk."""

    def __init__(self, cells: int, size: tuple[int, int], dtype: torch.dtype, device: torch.device) -> None:
        self.size = size
        self.cell = (-(-size[0] // cells), -(-size[1] // cells))
        self.rows = _interpolation(cells, (cells + 1) * self.cell[0]).to(device, dtype)
        self.cols = _interpolation(cells, (cells + 1) * self.cell[1]).to(device, dtype)

    def __call__(self, grids: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """n×1×H×W: each grid upsampled, then cropped at its shift."""
        height, width = self.size
        device = self.rows.device
        rows = self.rows[shifts[:, :1].to(device) + torch.arange(height, device=device)]  # n×H×c
        cols = self.cols[shifts[:, 1:].to(device) + torch.arange(width, device=device)]  # n×W×c
        return (rows @ grids.to(device, self.rows.dtype) @ cols.transpose(1, 2))[:, None]


def rise_masks(n: int, cells: int, p: float, size: tuple[int, int] | int, seed: int, *, key: str = "") -> torch.Tensor:
    """The first ``n`` RISE masks of photo ``key`` under ``seed``, N×1×H×W float32 in [0, 1]: the
    masks ``rise`` uses for a photo with that key (mask i is the same whatever n is)."""
    height, width = (size, size) if isinstance(size, int) else size
    params = RISEParams(n=n, cells=cells, p=p, seed=seed)  # validates
    masker = _Masker(cells, (height, width), torch.float32, torch.device("cpu"))
    draws = _draw(params.n, cells, params.p, masker.cell, seed, key)
    return masker(draws.grids, draws.shifts)


def saliency(ctx: Context) -> torch.Tensor:
    """S = 1/(N·p) Σ_i softmax(f(x ⊙ M_i))_c · M_i, B×1×H×W, before any scaling."""
    params = ctx.params_of(RISEParams, "rise")
    x, targets = ctx.images, ctx.targets
    batch, device = x.shape[0], x.device
    masker = _Masker(params.cells, ctx.size, x.dtype, device)
    draws = [_draw(params.n, params.cells, params.p, masker.cell, params.seed, key) for key in ctx.keys]
    grids = torch.cat([d.grids for d in draws])
    shifts = torch.cat([d.shifts for d in draws])
    items = batch * params.n
    image = torch.arange(batch, device=device).repeat_interleave(params.n)  # item j: mask j % n of photo j // n

    total = torch.zeros((batch, 1, *ctx.size), dtype=x.dtype, device=device)
    with plain_torch(), torch.no_grad():
        mask_bytes = ctx.size[0] * ctx.size[1] * x.element_size()
        size = even_chunks(items, chunk_items(footprint(ctx.model, x).infer_bytes + 2 * mask_bytes, ctx.memory_mb))
        log.debug("rise: %d masks in chunks of %d", items, size)
        tally = Tally("rise passes", items)
        for start in range(0, items, size):
            b = image[start:start + size]
            masks = masker(grids[start:start + size], shifts[start:start + size])
            probability = torch.softmax(ctx.model(x[b] * masks), dim=1).gather(1, targets[b][:, None])
            # index_add_ adds a photo's masks in item order: the same sum whatever the chunks
            total.index_add_(0, b, masks * probability[:, :, None, None])
            tally.add(len(b))
    return total / (params.n * params.p)


@method("rise", label="RISE", kind="heat", extra_passes=True, params=RISEParams, reference="Petsiuk et al. 2018")
def rise(ctx: Context) -> torch.Tensor:
    """RISE, B×1×H×W min–max scaled to [0, 1] per photo like the CAMs."""
    return to_heat(saliency(ctx), ctx.size)

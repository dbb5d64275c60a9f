"""Occlusion (Zeiler & Fergus 2014): how much the class score drops when a square of the photo is
hidden, averaged over the squares that hide each pixel.

As Captum 0.9's ``Occlusion`` computes it with ``sliding_window_shapes=(3, w, w)``,
``strides=(3, s, s)`` and ``baselines=0``: a w×w window of all three channels is set to 0 in the
model's input space; windows start at the multiples of s up to ⌈(H − w)/s⌉·s, so the last one
may overhang the edge and is cropped; a pixel's attribution is the mean, over the windows that
cover it, of y_c(x) − y_c(x with the window occluded). A window larger than the photo covers it
whole (Captum refuses that case).

Cost: one no-grad forward per (photo, window), all photos' windows in one list of items run in
chunks sized to ``ctx.memory_mb``: (⌈(H − w)/s⌉ + 1)·(⌈(W − w)/s⌉ + 1) per photo, 169 at 224²
with the defaults.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from xcnn.methods.context import Context
from xcnn.methods.passes import Tally
from xcnn.methods.sampling import chunk_items, even_chunks, footprint, plain_torch
from xcnn.registry import method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcclusionParams:
    window: int = field(default=32, metadata={"help": "side of the occluded square, in pixels"})
    stride: int = field(default=16, metadata={"help": "step between windows, in pixels (at most the window)"})

    def __post_init__(self) -> None:
        for name in ("window", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"occlusion {name} must be a whole number >= 1 (pixels), got {value!r}")
        if self.stride > self.window:
            raise ValueError(f"occlusion stride {self.stride} is larger than the window {self.window}: pixels "
                             f"between windows would never be occluded; give a stride <= the window")


def windows(length: int, window: int, stride: int) -> torch.Tensor:
    """Which pixels each window covers along one side: n×length bool, Captum's window positions."""
    count = -(-max(length - window, 0) // stride) + 1
    starts = torch.arange(count)[:, None] * stride
    pixels = torch.arange(length)[None, :]
    return (pixels >= starts) & (pixels < starts + window)


@method("occlusion", label="Occlusion", kind="signed", extra_passes=True, params=OcclusionParams,
        reference="Zeiler & Fergus 2014")
def occlusion(ctx: Context) -> torch.Tensor:
    """Mean score drop over the covering windows, B×3×H×W (the same value in each channel), signed."""
    params = ctx.params_of(OcclusionParams, "occlusion")
    x, targets = ctx.images, ctx.targets
    batch, device = x.shape[0], x.device
    (height, width) = ctx.size
    rows = windows(height, params.window, params.stride).to(device)
    cols = windows(width, params.window, params.stride).to(device)
    per_photo = len(rows) * len(cols)
    items = batch * per_photo
    # Item j is window j % per_photo (row-major, as Captum numbers them) of photo j // per_photo.
    image = torch.arange(batch, device=device).repeat_interleave(per_photo)
    row = torch.arange(len(rows), device=device).repeat_interleave(len(cols)).repeat(batch)
    col = torch.arange(len(cols), device=device).repeat(len(rows) * batch)

    scores = torch.empty(items, dtype=x.dtype, device=device)
    with plain_torch(), torch.no_grad():
        size = even_chunks(items, chunk_items(footprint(ctx.model, x).infer_bytes, ctx.memory_mb))
        log.debug("occlusion: %d windows in chunks of %d", items, size)
        tally = Tally("occlusion passes", items)
        for start in range(0, items, size):
            b, r, c = image[start:start + size], row[start:start + size], col[start:start + size]
            hidden = rows[r][:, None, :, None] & cols[c][:, None, None, :]
            logits = ctx.model(torch.where(hidden, torch.zeros((), dtype=x.dtype, device=device), x[b]))
            scores[start:start + size] = logits.gather(1, targets[b][:, None])[:, 0]
            tally.add(len(b))

    drop = ctx.logits.gather(1, targets[:, None]).to(x.dtype)[:, :, None] - scores.view(batch, len(rows), len(cols))
    # Windows are products of a row band and a column band: the sum over windows of drop × window
    # is rowsᵀ · drop · cols, and a pixel's window count the product of its row and column counts.
    r, c = rows.to(x.dtype), cols.to(x.dtype)
    total = torch.einsum("ih,bij,jw->bhw", r, drop, c)
    covering = r.sum(0)[:, None] * c.sum(0)[None, :]
    return (total / covering)[:, None].expand(-1, 3, -1, -1).contiguous()

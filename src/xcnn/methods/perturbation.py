"""Score-CAM: weigh each channel of the target layer by the class score of the photo masked by it.

As pytorch-grad-cam 1.5.7's ``ScoreCAM`` computes it (Wang et al. 2020): for activations
A (B×K×h×w), M_k = A_k upsampled to H×W (bilinear, align_corners=True), min–max scaled per
channel and image with 1e-8 added to the span; s_k = y_c(x ⊙ M_k), the pre-softmax logit;
w = softmax_k(s); L = relu(Σ_k w_k A_k), then upsampled and scaled like Grad-CAM.

Cost: one no-grad forward per (image, channel), all images' channels in one list of items run in
chunks sized to ``ctx.memory_mb``. A channel whose upsampled map is constant has an all-zero
mask, so x ⊙ M_k is the all-zero image for every such channel of every image: they share one
item, batched with the others.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from xcnn.errors import XcnnError
from xcnn.methods.context import Context, to_heat, weighted_cam
from xcnn.methods.passes import Tally
from xcnn.methods.sampling import chunk_items, even_chunks, footprint, plain_torch
from xcnn.registry import method

log = logging.getLogger(__name__)

_EPS = 1e-8  # added to each mask's span, as pytorch-grad-cam does


@dataclass(frozen=True)
class ScoreCAMParams:
    top_k: int | None = field(default=None, metadata={
        "help": "score only each image's k channels of highest mean activation (none: every channel, as the paper)"})

    def __post_init__(self) -> None:
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) != self.top_k
                                       or self.top_k < 1):
            raise ValueError(f"scorecam top_k must be a whole number >= 1, or left out for every channel; "
                             f"got {self.top_k!r}")


@method("scorecam", label="Score-CAM", kind="heat", needs_layer=True, extra_passes=True, params=ScoreCAMParams,
        reference="Wang et al. 2020")
def scorecam(ctx: Context) -> torch.Tensor:
    """Score-CAM, B×1×H×W in [0, 1]."""
    return to_heat(channel_cam(ctx), ctx.size)


def channel_cam(ctx: Context) -> torch.Tensor:
    """relu(Σ_k w_k A_k) at the layer's resolution, B×1×h×w, before any upsampling or scaling."""
    if ctx.activation is None:
        raise XcnnError("scorecam needs the target layer's activations; pass a target layer")
    activation = ctx.activation.detach()
    with plain_torch(), torch.no_grad():
        return weighted_cam(channel_weights(ctx, activation), activation)


def channel_weights(ctx: Context, activation: torch.Tensor) -> torch.Tensor:
    """w = softmax over the scored channels of s_k = y_c(x ⊙ M_k), B×K; channels left out by
    ``top_k`` get weight 0."""
    model, x, targets = ctx.model, ctx.images, ctx.targets
    batch, channels = activation.shape[:2]
    most = chunk_items(footprint(model, x).infer_bytes, ctx.memory_mb)
    map_bytes = 2 * ctx.size[0] * ctx.size[1] * x.element_size()  # an upsampled map and its temporary
    lo, hi = _mask_ranges(activation, ctx.size, chunk_items(map_bytes, ctx.memory_mb))
    params = ctx.params_of(ScoreCAMParams, "scorecam")
    scored = _scored_channels(activation, params.top_k)

    # Counting the items is the call's only host sync.
    image, channel = torch.nonzero(scored & (hi > lo), as_tuple=True)
    constant = scored & (hi == lo)
    masked = image.numel()
    # Constant channels all give the all-zero image: one more item, the last, serves them all.
    items = masked + int(constant.any())
    size = even_chunks(items, most)
    log.debug("scorecam: %d forwards for %d masks, chunks of %d", items, batch * channels, size)
    # Left-out channels score -inf: softmax gives them weight 0 and shares among the rest.
    scores = torch.full((batch, channels), float("-inf"), dtype=x.dtype, device=x.device)
    tally = Tally("scorecam passes", items)
    for start in range(0, items, size):
        b, k = image[start:start + size], channel[start:start + size]
        mask = _upsample(activation[b, k][:, None], ctx.size)
        mask = (mask - lo[b, k, None, None, None]) / (hi[b, k, None, None, None] - lo[b, k, None, None, None] + _EPS)
        inputs = x[b] * mask
        if items > masked and start + size >= items:  # the last chunk carries the all-zero image
            inputs = torch.cat([inputs, x.new_zeros((1, *x.shape[1:]))])
        logits = model(inputs)
        scores[b, k] = logits[: len(b)].gather(1, targets[b][:, None])[:, 0]
        tally.add(len(inputs))
    if items > masked:
        scores = torch.where(constant, logits[-1, targets][:, None], scores)
    return torch.softmax(scores, dim=1)


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # What torch.nn.UpsamplingBilinear2d does, which pytorch-grad-cam's ScoreCAM uses.
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=True)


def _mask_ranges(activation: torch.Tensor, size: Sequence[int], rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of every upsampled channel map, B×K each, upsampling ``rows`` maps at a time.

    Taken from the upsampled maps, not the small ones, so constancy is judged on the mask that
    would be used: a constant non-zero map can upsample to one with rounding-level spread."""
    flat = activation.flatten(0, 1)[:, None]
    lo, hi = [], []
    for start in range(0, flat.shape[0], rows):
        up = _upsample(flat[start:start + rows], size).flatten(1)
        lo.append(up.amin(dim=1))
        hi.append(up.amax(dim=1))
    shape = activation.shape[:2]
    return torch.cat(lo).view(shape), torch.cat(hi).view(shape)


def _scored_channels(activation: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Which channels are scored, B×K bool: all, or each image's top_k by mean activation."""
    batch, channels = activation.shape[:2]
    if top_k is None or top_k >= channels:
        return torch.ones((batch, channels), dtype=torch.bool, device=activation.device)
    if int(top_k) != top_k or top_k < 1:
        raise XcnnError(f"scorecam_top_k must be a positive whole number or None, got {top_k!r}")
    best = activation.mean(dim=(2, 3)).topk(int(top_k), dim=1).indices
    scored = torch.zeros((batch, channels), dtype=torch.bool, device=activation.device)
    return scored.scatter_(1, best, True)

"""Ablation-CAM (Desai & Ramaswamy 2020): weigh each channel of the target layer by how much the
class score drops when that channel is switched off.

As pytorch-grad-cam 1.5.7's ``AblationCAM`` computes it: for activations A (B×K×h×w),
w_k = (y_c − y_c^(k)) / y_c, where y_c^(k) is the logit with channel k of the layer's output set
to 0 and the rest of the network run on it; L = relu(Σ_k w_k A_k), then upsampled and scaled like
Grad-CAM. pytorch-grad-cam sets the channel to 0 only when the layer's minimum is 0 and to
min − 1e7 otherwise; xcnn always uses 0, as the paper does. When y_c ≤ 0 the weights change
sign with y_c (the reference's formula, kept); when y_c = 0 they are undefined and the map is 0.

Cost: the network after the layer runs once per (photo, channel) with the layer's output
replaced (a hook), in chunks of one photo's channels sized to ``ctx.memory_mb`` (512 channels for
ResNet-18's ``layer4``, 2048 for ResNet-50's); the network up to the layer runs once per chunk,
not per channel, where what follows the layer can broadcast one photo over the chunk's rows
(``Context.run_with_layer``), else once per row. Only the layer's captured call (its last in a
forward pass) is replaced, so a module the network calls twice is ablated where the CAM reads it.
"""
from __future__ import annotations

import logging

import torch

from xcnn.errors import XcnnError
from xcnn.methods.context import Context, to_heat, weighted_cam
from xcnn.methods.passes import Tally
from xcnn.methods.sampling import chunk_items, even_chunks, footprint, plain_torch
from xcnn.registry import method

log = logging.getLogger(__name__)


@method("ablationcam", label="Ablation-CAM", kind="heat", needs_layer=True, extra_passes=True,
        reference="Desai & Ramaswamy 2020")
def ablationcam(ctx: Context) -> torch.Tensor:
    """Ablation-CAM, B×1×H×W in [0, 1]."""
    return to_heat(layer_cam(ctx), ctx.size)


def layer_cam(ctx: Context) -> torch.Tensor:
    """relu(Σ_k w_k A_k) at the layer's resolution, B×1×h×w, before any upsampling or scaling."""
    if ctx.activation is None:
        raise XcnnError("ablationcam needs the target layer's activations; pass a target layer")
    activation = ctx.activation.detach()
    return weighted_cam(channel_weights(ctx, activation), activation)


def channel_weights(ctx: Context, activation: torch.Tensor) -> torch.Tensor:
    """w_k = (y_c − y_c^(k)) / y_c, B×K; all 0 for a photo whose y_c is 0."""
    x, targets = ctx.images, ctx.targets
    batch, channels = activation.shape[:2]
    device = activation.device
    with plain_torch():
        # an item also holds its replaced activations, and their copy on the way in
        item_bytes = footprint(ctx.model, x).infer_bytes + 2 * activation[0].numel() * activation.element_size()
    # A chunk holds one photo's channels only: run_with_layer then runs the network up to the
    # layer once per chunk, not once per channel.
    size = even_chunks(channels, chunk_items(item_bytes, ctx.memory_mb))
    log.debug("ablationcam: %d photos × %d channels in chunks of %d", batch, channels, size)
    scores = torch.empty((batch, channels), dtype=ctx.logits.dtype, device=device)
    tally = Tally("ablationcam passes", batch * channels)
    for b in range(batch):
        for start in range(0, channels, size):
            k = torch.arange(start, min(start + size, channels), device=device)
            replaced = activation[b].repeat(len(k), 1, 1, 1)
            replaced[torch.arange(len(k), device=device), k] = 0
            logits = ctx.run_with_layer(replaced, torch.full_like(k, b))
            scores[b, k] = logits[:, int(targets[b])]
            tally.add(len(k))
    score = ctx.logits.gather(1, targets[:, None])
    if bool((score == 0).any()):
        log.warning("ablationcam: the target's score is 0 for %d photo(s): their weights are undefined, "
                    "their maps 0", int((score == 0).sum()))
    drop = score - scores
    return torch.where(score != 0, drop / torch.where(score != 0, score, 1), torch.zeros_like(drop))

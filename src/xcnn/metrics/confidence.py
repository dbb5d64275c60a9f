"""Average Drop and Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++,
https://arxiv.org/abs/1710.11063), as TorchCAM 0.5's ``ClassificationMetric``. Pure batched
functions of a ``forward`` callable (``xcnn.metrics.forward``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics.forward import Forward, check_chunk, target_probability

if TYPE_CHECKING:
    import torch


def confidence_scale(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The B×1×H×W multiplier in [0, 1] of Average Drop: a heat map (C = 1, values in [0, 1])
    as it is, a signed map (C > 1) as r / max r with r = Σ_c m_c² (all-zero stays zero); then
    bilinearly upsampled (align_corners=False, as TorchCAM) to ``size`` when it differs."""
    import torch

    if maps.dim() != 4:
        raise XcnnError(f"maps must be B×C×H×W, got shape {tuple(maps.shape)}")
    m = maps.detach()
    if m.shape[1] == 1:
        if bool((m < 0).any() | (m > 1).any()):
            raise XcnnError("a heat map (B×1×H×W) for Average Drop must lie in [0, 1]; "
                            "min-max scale it or pass the signed map")
        scale = m
    else:
        r = m.double().square().sum(dim=1, keepdim=True)
        top = r.amax(dim=(2, 3), keepdim=True)
        scale = (r / top.where(top > 0, torch.ones_like(top))).to(m.dtype)
    if tuple(scale.shape[2:]) != tuple(size):
        scale = torch.nn.functional.interpolate(scale, size=size, mode="bilinear", align_corners=False)
    return scale


def confidence(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
               chunk: int = 32) -> dict[str, torch.Tensor]:
    """Average Drop and Increase in Confidence per image, with ``logits_fn=softmax``: s = the
    target's softmax probability for x, s′ for x times ``confidence_scale(maps)``;
    ``average_drop`` = relu(s − s′)/(s + 1e-7) (low is good), ``increase_in_confidence`` = 1.
    where s < s′ (high is good). float64 [B] on x's device, with ``s`` and ``s_masked``."""
    import torch

    b = x.shape[0] if x.dim() == 4 else -1
    if x.dim() != 4 or maps.dim() != 4 or maps.shape[0] != b:
        raise XcnnError(f"x and maps must be B×C×H×W of the same B, got {tuple(x.shape)} and {tuple(maps.shape)}")
    check_chunk(chunk)
    tgt = torch.as_tensor(targets, dtype=torch.long, device=x.device).reshape(-1)
    if tgt.numel() != b:
        raise XcnnError(f"need one target per image: {b} images, {tgt.numel()} targets")
    scale = confidence_scale(maps.to(x.device), (x.shape[2], x.shape[3]))
    s = torch.empty(b, dtype=torch.float64, device=x.device)
    s2 = torch.empty_like(s)
    tally = Tally("average drop passes", 2 * b)
    for start in range(0, b, max(1, chunk // 2)):
        sl = slice(start, start + max(1, chunk // 2))
        xi = x[sl].detach()
        p, _ = target_probability(forward, torch.cat([xi, xi * scale[sl].to(x.dtype)]), tgt[sl].repeat(2))
        s[sl], s2[sl] = p[:len(xi)], p[len(xi):]
        tally.add(2 * len(xi))
    return {"average_drop": torch.relu(s - s2) / (s + 1e-7), "increase_in_confidence": (s < s2).double(),
            "s": s, "s_masked": s2}


def average_drop(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                 chunk: int = 32) -> torch.Tensor:
    """``confidence(...)["average_drop"]``: float64 [B], low is good."""
    return confidence(forward, x, maps, targets, chunk)["average_drop"]


def increase_in_confidence(forward: Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                           chunk: int = 32) -> torch.Tensor:
    """``confidence(...)["increase_in_confidence"]``: float64 [B] of 0./1., high is good."""
    return confidence(forward, x, maps, targets, chunk)["increase_in_confidence"]

"""What the model checks after Quantus 0.6.0 share: the ``Batch`` they score (model inputs, targets,
photo keys, validated once), the per-photo noise generators, and the target's logit and probability
read through a ``forward`` callable (B×C×H×W model inputs -> B×classes logits, eval mode, chunked
by the caller as it likes).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xcnn.errors import XcnnError

if TYPE_CHECKING:
    import torch

# B×C×H×W model inputs -> B×classes logits (eval mode; the caller's own chunking, device and dtype)
Forward = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Batch:
    """B model inputs ``x`` (B×C×H×W), their B ``targets`` (LongTensor [B]) and one ``keys`` string
    per photo, which seeds the photo's random draws so a value never depends on its batch."""

    x: torch.Tensor
    targets: torch.Tensor
    keys: Sequence[str]

    def __post_init__(self) -> None:
        if self.x.dim() != 4:
            raise XcnnError(f"x must be B×C×H×W model inputs, got shape {tuple(self.x.shape)}")
        b = int(self.x.shape[0])
        if self.targets.dim() != 1 or self.targets.numel() != b:
            raise XcnnError(f"need one target per image: {b} images, targets of shape {tuple(self.targets.shape)}")
        if isinstance(self.keys, str) or len(self.keys) != b:
            raise XcnnError(f"need one key per image: {b} images, keys {self.keys!r}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, c, h, w = (int(v) for v in self.x.shape)
        return b, c, h, w

    def relevance(self, relevance: torch.Tensor, per_channel: bool) -> torch.Tensor:
        """``relevance`` checked against x and detached: B×C'×H×W with any C' (``per_channel``
        False) or C' in (1, C) (True: read per input value)."""
        b, c, h, w = self.shape
        r = relevance
        if r.dim() != 4 or r.shape[0] != b or tuple(r.shape[2:]) != (h, w) or (per_channel and r.shape[1] not in (1, c)):
            form = "B×1×H×W or B×C×H×W" if per_channel else "B×1×H×W"
            raise XcnnError(f"relevance must be {form} matching x {tuple(self.x.shape)}, got {tuple(r.shape)}")
        return r.detach()


def check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise XcnnError(f"chunk must be at least 1, got {chunk!r}")


def noise_generator(seed: int, stream: str, key: str, sample: int) -> torch.Generator:
    """A CPU generator for draw ``sample`` of one photo in one metric's ``stream``: seeded by a
    stable hash of (seed, stream, key, sample), so a value never depends on its batch."""
    import torch

    from xcnn.methods.sampling import noise_seed

    return torch.Generator().manual_seed(noise_seed(seed, f"{stream}/{key}", sample))


def torch_nan(like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.full_like(like, float("nan"))


def pearson(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of two B×R tensors (float64); NaN for a constant row."""
    du = u.double() - u.double().mean(dim=1, keepdim=True)
    dv = v.double() - v.double().mean(dim=1, keepdim=True)
    den = (du.square().sum(dim=1) * dv.square().sum(dim=1)).sqrt()
    r = (du * dv).sum(dim=1) / den
    return r.where(den > 0, torch_nan(r)).clamp(-1.0, 1.0)


def logits(forward: Forward, batch: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.no_grad():
        out = forward(batch)
    if out.dim() != 2 or out.shape[0] != batch.shape[0]:
        raise XcnnError(f"forward must return B×classes logits, got shape {tuple(out.shape)}")
    return out


def target_logit(forward: Forward, batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits(forward, batch).double().gather(1, targets[:, None].to(batch.device))[:, 0]


def target_probability(forward: Forward, batch: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's softmax probability (float64) and whether the target is the argmax."""
    import torch

    out = logits(forward, batch)
    t = targets[:, None].to(out.device)
    prob = torch.softmax(out.float(), dim=1).gather(1, t)[:, 0].double()
    return prob, (out.argmax(dim=1, keepdim=True) == t)[:, 0].double()

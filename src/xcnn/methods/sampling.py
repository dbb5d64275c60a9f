"""Integrated Gradients and SmoothGrad: true input gradients at many points around each photo.

Both evaluate ∂y_c/∂x at n points per image. The points of every image of the batch are laid
out as one list of items and run through the model in chunks sized to ``ctx.memory_mb``,
so a chunk mixes images and steps (or samples) and no image is ever run alone.

The gradients are the model's own (plain autograd, input only, no weight gradients): rectifier
rules active around the call are suspended while these passes run (:func:`plain_torch`).

Also home of what the extra-pass methods share: :func:`plain_torch` and :func:`footprint` (the
memory estimate).
"""
from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.methods.context import Context
from xcnn.methods.passes import Tally
from xcnn.registry import method
from xcnn.rules import true_derivatives

log = logging.getLogger(__name__)


@contextmanager
def plain_torch() -> Iterator[None]:
    """Run the model as written: inside a caller's or the engine's ``RectifierRules`` a forward
    pass would route every rectifier through a rule-dependent backward; in this block rectifiers
    are the plain ops (:func:`xcnn.rules.true_derivatives`)."""
    with true_derivatives():
        yield


@dataclass(frozen=True)
class Footprint:
    """Memory one item of a batch costs, estimated from one forward pass of one item.

    The estimate counts the distinct tensors autograd saves for the backward pass of one item
    (parameters and buffers excluded), ``saved``, and the largest of them, ``largest``:

    - an item of a forward + input-backward batch: 1.25·saved (the backward's temporaries and
      the allocator's slack) + 2·largest (the gradient in flight and the one being made) +
      2·input (the item's input and its gradient);
    - an item of a no-grad forward batch: 3·largest (a layer's input and output and a kept
      residual) + 2·input (the mask and the masked image).

    Measured on CPU (RSS growth of a batch, 224×224): ResNet-50 backward 102 MiB an item against
    110 estimated, ResNet-18 30 against 34; ResNet-18 no-grad forward 6.1 against 10.3.
    """

    grad_bytes: int
    infer_bytes: int


# Per model and input shape: the probe costs a forward pass at batch size 1 (and, on CPU, new
# kernels for that shape), which a run over many batches of one size should pay once. The
# estimate depends on the architecture and the shape, not on the weights; a stale one would
# only change the chunking, never a map.
_FOOTPRINTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], Footprint]] = weakref.WeakKeyDictionary()


def footprint(model: nn.Module, images: torch.Tensor) -> Footprint:
    key = (tuple(images.shape[1:]), images.dtype, images.device)
    known = _FOOTPRINTS.setdefault(model, {})
    if key not in known:
        known[key] = _probe(model, images)
    return known[key]


def _probe(model: nn.Module, images: torch.Tensor) -> Footprint:
    x = images.new_zeros((1, *images.shape[1:]), requires_grad=True)
    fixed = {t.untyped_storage().data_ptr() for t in chain(model.parameters(), model.buffers())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in fixed:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with plain_torch(), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    largest = max(saved.values(), default=0)
    item = x.numel() * x.element_size()
    return Footprint(grad_bytes=sum(saved.values()) * 5 // 4 + 2 * largest + 2 * item, infer_bytes=3 * largest + 2 * item)


def chunk_items(item_bytes: int, memory_mb: int) -> int:
    """How many items one pass may hold within the budget (at least one)."""
    if memory_mb <= 0:
        raise XcnnError(f"memory_mb must be positive, got {memory_mb}")
    return max(1, (memory_mb << 20) // max(item_bytes, 1))


def run_chunked(model: nn.Module, inputs: torch.Tensor, example: torch.Tensor, memory_mb: int) -> torch.Tensor:
    """The model's logits for N inputs, without gradients and without the engine's rectifier
    rules, in chunks that fit ``memory_mb`` (sized by ``example``'s footprint)."""
    with plain_torch(), torch.no_grad():
        most = chunk_items(footprint(model, example).infer_bytes, memory_mb)
        return torch.cat([model(inputs[i:i + most]) for i in range(0, len(inputs), most)])


def even_chunks(items: int, most: int) -> int:
    """The chunk size that runs ``items`` in as few passes of at most ``most`` as possible, all
    about equal: 50 items at most 37 go as 25 + 25, not 37 + 13 (less memory, and no small
    last pass that leaves threads idle)."""
    passes = -(-items // most)
    return -(-items // max(passes, 1))


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [0, 1], as Captum's
    "gausslegendre" builds them (float64; Captum casts both to float32)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1 + nodes), 0.5 * weights


@dataclass(frozen=True)
class IntegratedGradientsParams:
    steps: int = field(default=50, metadata={"help": "Gauss-Legendre steps from the baseline 0 of the model's input"})

    def __post_init__(self) -> None:
        _positive(self.steps, "integrated_gradients steps")


@method("integrated_gradients", label="Integrated Gradients", kind="signed", extra_passes=True,
        params=IntegratedGradientsParams, fields=("completeness",), reference="Sundararajan et al. 2017")
def integrated_gradients(ctx: Context) -> torch.Tensor:
    """IG with baseline 0: x ⊙ Σ_i w_i ∂y_c/∂x(α_i x), n = ``steps`` Gauss–Legendre nodes.
    B×3×H×W, signed. Leaves |Σ IG − (y_c(x) − y_c(0))| / |y_c(x) − y_c(0)| per image in
    ``ctx.extras["completeness"]`` (NaN where y_c(x) = y_c(0))."""
    params = ctx.params_of(IntegratedGradientsParams, "integrated_gradients")
    n = _positive(params.steps, "integrated_gradients steps")
    x, targets = ctx.images, ctx.targets
    batch, device = x.shape[0], x.device
    nodes, weights = gauss_legendre(n)
    # One more step, α = 0 with weight 0, is the baseline itself: y_c(x′) rides in the last
    # chunk instead of costing a forward pass of its own.
    alphas = torch.tensor([*nodes, 0.0], dtype=x.dtype, device=device)
    steps = torch.tensor([*weights, 0.0], dtype=x.dtype, device=device)
    # Item j is step j // B of image j % B (the step-major order Captum uses); the last item,
    # step n of image 0, is the baseline.
    items = batch * n + 1
    image = torch.arange(batch, device=device).repeat(n + 1)[:items]
    step = torch.arange(n + 1, device=device).repeat_interleave(batch)[:items]

    with plain_torch():
        size = even_chunks(items, chunk_items(footprint(ctx.model, x).grad_bytes, ctx.memory_mb))
        log.debug("integrated_gradients: %d items in chunks of %d", items, size)
        total = torch.zeros_like(x)
        tally = Tally("integrated_gradients passes", items)
        for start in range(0, items, size):
            i, s = image[start:start + size], step[start:start + size]
            # Captum's x′ + α(x − x′) with x′ = 0: the same floats, +0.0 (not −0.0) at α = 0.
            grad, logits = _input_grad(ctx.model, 0.0 + alphas[s].view(-1, 1, 1, 1) * (x[i] - 0.0), targets[i])
            total.index_add_(0, i, grad * steps[s].view(-1, 1, 1, 1))
            tally.add(len(i))
    attribution = x * total

    at_baseline = logits[-1, targets]
    gap = ctx.logits.gather(1, targets[:, None])[:, 0] - at_baseline
    error = (attribution.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()
    ctx.extras["completeness"] = torch.where(gap != 0, error, torch.full_like(error, float("nan")))
    return attribution


def noise_seed(seed: int, key: str, sample: int) -> int:
    """Seed of the noise of one sample of one photo: a stable hash of (seed, key, sample), so
    the noise never depends on the batch, the chunking, the process or the device."""
    digest = hashlib.sha256(f"{seed}/{key}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch.Generator takes it


@dataclass(frozen=True)
class SmoothGradParams:
    samples: int = field(default=25, metadata={"help": "noisy copies averaged"})
    sigma: float = field(default=0.15, metadata={"help": "noise std as a fraction of the photo's value range"})
    # sample s of photo key comes from a generator seeded by (seed, key, s): no batch changes a map
    seed: int = field(default=0, metadata={"help": "noise seed"})

    def __post_init__(self) -> None:
        _positive(self.samples, "smoothgrad samples")
        if not 0 <= self.sigma <= 10:
            raise ValueError(f"smoothgrad sigma must be in [0, 10] (a fraction of the photo's value range), "
                             f"got {self.sigma!r}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed < 2**63:
            raise ValueError(f"smoothgrad seed must be a whole number >= 0, got {self.seed!r}")


@method("smoothgrad", label="SmoothGrad", kind="signed", extra_passes=True, params=SmoothGradParams,
        reference="Smilkov et al. 2017")
def smoothgrad(ctx: Context) -> torch.Tensor:
    """Mean of ∂y_c/∂x over n = ``samples`` copies x + ε, ε ~ N(0, σ²), σ = ``sigma`` ·
    (max x − min x) per image. B×3×H×W, signed."""
    params = ctx.params_of(SmoothGradParams, "smoothgrad")
    n = _positive(params.samples, "smoothgrad samples")
    if len(ctx.keys) != ctx.images.shape[0]:
        raise XcnnError(f"smoothgrad needs one key per image, got {len(ctx.keys)} for {ctx.images.shape[0]}")
    x, targets = ctx.images, ctx.targets
    batch, device = x.shape[0], x.device
    sigma = params.sigma * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    items = [(b, s) for s in range(n) for b in range(batch)]
    image = torch.tensor([b for b, _ in items], device=device)
    pinned = device.type == "cuda"

    with plain_torch():
        size = even_chunks(len(items), chunk_items(footprint(ctx.model, x).grad_bytes, ctx.memory_mb))
        log.debug("smoothgrad: %d items in chunks of %d", len(items), size)
        total = torch.zeros_like(x)
        tally = Tally("smoothgrad passes", len(items))
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            # Noise is drawn in float32 on the CPU, one generator per (photo, sample), and sent
            # over in one copy: the same numbers on every device, dtype and batch.
            noise = torch.empty((len(chunk), *x.shape[1:]), pin_memory=pinned)
            for row, (b, s) in enumerate(chunk):
                generator = torch.Generator().manual_seed(noise_seed(params.seed, ctx.keys[b], s))
                noise[row] = torch.randn(x.shape[1:], generator=generator)
            i = image[start:start + size]
            noise = noise.to(device, x.dtype, non_blocking=pinned)
            noisy = x[i] + noise * sigma[i].view(-1, 1, 1, 1)
            total.index_add_(0, i, _input_grad(ctx.model, noisy, targets[i])[0])
            tally.add(len(chunk))
    return total / n


def _input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂y_t/∂x for each row of x, and the logits: one forward, one backward to the input only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad, logits.detach()


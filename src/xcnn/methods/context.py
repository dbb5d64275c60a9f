"""What one engine call hands to every compute function of the registry.

The engine makes one forward pass and the backward passes the asked methods' rules need, then
calls each method's compute function, in registry order, with one ``Context``. A compute
function returns the method's B×C×H×W map and may leave per-image numbers in ``extras``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

P = TypeVar("P")
log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a method's compute function reads (``@xcnn.method``): the batch, the shared forward and
    backward passes, its own parameters, and ``run`` / ``run_with_layer`` to run the model again."""

    model: nn.Module  # in eval mode for the whole call
    images: torch.Tensor  # B×3×H×W in the model's input space, detached
    targets: torch.Tensor  # LongTensor[B]
    logits: torch.Tensor  # B×classes from the shared forward pass, detached
    keys: Sequence[str]  # one per image; seeds per-photo randomness so batching never changes a map
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # ∂y_c/∂x by rule: gradient, deconvnet, guided
    activation: torch.Tensor | None = None  # target-layer activations A, B×K×h×w, detached
    layer_grad: torch.Tensor | None = None  # ∂y_c/∂A (gradient rule), B×K×h×w
    layer: str | None = None  # target layer name
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # maps computed so far in this call
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # the running method's per-image numbers
    params: Any = None  # the running method's parameters (its registry entry's dataclass), or None
    memory_mb: int = 4096  # working memory a method that runs the model may use at once
    # (replacement as activation reads it, the layer's own output) -> what the layer returns instead:
    # its layout (tokens, NHWC) again; set by the engine for run_with_layer
    layer_output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    options: Any = None  # xcnn 0.2's Options (deprecated): read by params_of, sets memory_mb
    # (mean, std) per channel of the model's input normalisation, when the Explainer knows it
    # (LoadedModel.explainer); what a pixel's bounds in the input space follow from
    input_statistics: tuple[Sequence[float], Sequence[float]] | None = None
    _layer_calls: int | None = field(default=None, init=False, repr=False)  # the layer's calls in one forward
    _shared_prefix: bool = field(default=True, init=False, repr=False)  # see _forward_replacing

    def __post_init__(self) -> None:
        if self.options is not None:
            self.memory_mb = self.options.memory_mb

    def params_of(self, cls: type[P], method: str) -> P:
        """The running method's parameters: ``params`` when it is a ``cls``, else what a 0.2
        ``options`` bag sets, else ``cls()``'s defaults."""
        if isinstance(self.params, cls):
            return self.params
        if self.options is not None:
            value = self.options.params().get(method)
            if isinstance(value, cls):
                return value
        return cls()

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits for N inputs (N×3×H×W in its input space), without gradients and
        without the engine's rectifier rules, in chunks that fit ``memory_mb``."""
        from xcnn.methods.sampling import run_chunked

        return run_chunked(self.model, inputs, self.images, self.memory_mb)

    def run_with_layer(self, replaced: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The logits when the target layer's output is replaced: row n runs photo ``image[n]``
        with the layer giving ``replaced[n]`` (N×K×h×w, as ``activation`` reads) instead of its own
        activations. What Ablation-CAM and its kin need; no gradients, chunked to ``memory_mb``.
        Rows of one photo together (a chunk of one photo's ablations) cost one pass of the network
        up to the layer, and the rest of it per row."""
        from xcnn.methods.sampling import chunk_items, footprint, plain_torch

        if self.layer is None or self.activation is None:
            raise RuntimeError("run_with_layer needs the target layer: register the method with needs_layer=True")
        module = dict(self.model.named_modules())[self.layer]
        convert = self.layer_output or (lambda replacement, own: replacement)
        current: list[torch.Tensor] = []
        most = chunk_items(footprint(self.model, self.images).infer_bytes, self.memory_mb)  # probes: hook after
        # The engine captures the layer's last call in a forward pass: only that one is replaced (a
        # module the network calls twice, as EfficientNet-Lite0's `_swish`, keeps its first call).
        calls, seen = self._calls_per_forward(module), [0]

        def hook(_m: nn.Module, _i: Any, own: torch.Tensor) -> torch.Tensor | None:
            seen[0] += 1
            if seen[0] != calls:
                return None
            rows = len(current[0])
            if isinstance(own, torch.Tensor) and len(own) != rows:  # one photo run once for all its rows
                own = own.expand(rows, *own.shape[1:])
            return convert(current[0], own)

        handle = module.register_forward_hook(hook)
        try:
            with plain_torch(), torch.no_grad():
                out = []
                for i in range(0, len(image), most):
                    current[:] = [replaced[i:i + most]]
                    out.append(self._forward_replacing(image[i:i + most], seen))
                return torch.cat(out)
        finally:
            handle.remove()

    def _forward_replacing(self, rows: torch.Tensor, seen: list[int]) -> torch.Tensor:
        """The logits of photos ``rows`` with the layer's captured call replaced (by the hook).

        When every row is the same photo, the photo runs once and the replacement carries the
        rows: what comes after the layer broadcasts the photo's earlier tensors (a skip
        connection) over them, as it would the same tensor repeated, and the network before the
        layer runs once instead of per row. A network that cannot broadcast so (a concatenation
        with an earlier tensor, a batch size kept from the input) raises or returns another
        number of rows; it then runs every row, as from then on for this call."""
        if self._shared_prefix and len(rows) > 1 and bool((rows == rows[0]).all()):
            seen[0] = 0
            try:
                logits: torch.Tensor = self.model(self.images[rows[:1]])
                if logits.shape[0] == len(rows):
                    return logits
            except RuntimeError as err:
                log.debug("run_with_layer: the network after %s does not broadcast one photo (%s); "
                          "running every row", self.layer, err)
            self._shared_prefix = False
        seen[0] = 0
        every: torch.Tensor = self.model(self.images[rows])
        return every

    def _calls_per_forward(self, module: nn.Module) -> int:
        """How often one forward pass calls ``module``: counted once, on the first photo."""
        from xcnn.methods.sampling import plain_torch

        if self._layer_calls is None:
            count = [0]
            handle = module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
            try:
                with plain_torch(), torch.no_grad():
                    self.model(self.images[:1])
            finally:
                handle.remove()
            self._layer_calls = max(count[0], 1)
        return self._layer_calls


def to_heat(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A B×1×h×w class-activation map upsampled bilinearly to H×W and min-max scaled to [0, 1]
    per image, as Grad-CAM does. A map with no spread stays all zero (never NaN)."""
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    lo = cam.amin(dim=(2, 3), keepdim=True)
    span = cam.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def weighted_cam(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """relu(Σ_k w_k A_k), B×1×h×w, for one weight per channel and image (B×K) and activations
    A (B×K×h×w): how Ablation-CAM and Score-CAM combine the channels they scored."""
    return F.relu((weights[:, :, None, None] * activation).sum(dim=1, keepdim=True))

"""The CAM layer: finding it ("auto"), reading its output as a B×C×h×w map whatever its layout,
and capturing it during the forward pass; and the eval mode the whole call runs in."""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from xcnn.errors import XcnnError, did_you_mean
from xcnn.layouts import LAYOUTS as NAMED_LAYOUTS

LAYOUTS = (None, *NAMED_LAYOUTS)  # None: the map as it is, as "nchw" says

_ShapeKey = tuple[tuple[int, ...], torch.dtype, torch.device]
_Tree = tuple[tuple[str, type, int], ...]

# Per model: the automatic layer's probe is a forward pass, which a fresh Explainer for every
# call would otherwise pay every call. Keyed by the module tree (a replaced module probes again)
# and the example's shape, dtype and device (what the probe's fallback depends on).
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, tuple[_Tree, dict[_ShapeKey, str]]] = weakref.WeakKeyDictionary()


def auto_layer(model: nn.Module, example: torch.Tensor) -> str:
    """:func:`find_target_layer`, probed once per model, module tree and example shape."""
    tree = tuple((name, type(m), id(m)) for name, m in model.named_modules())
    known_tree, known = _AUTO_LAYERS.get(model, ((), {}))
    if known_tree != tree:  # only the latest tree is kept: a model edited in a loop holds one entry
        known = {}
        _AUTO_LAYERS[model] = (tree, known)
    key = (tuple(example.shape[1:]), example.dtype, example.device)
    if key not in known:
        known[key] = find_target_layer(model, example)
    return known[key]


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the module whose output is the last 4-D feature map before global pooling.

    Found by one probe forward pass: among modules with a 4-D output larger than 1×1, the one
    that finished last, skipping adaptive pooling (VGG's 7×7 adaptive pool is a resampling for
    the classifier, not a feature map). A container finishing after its last child wins, so
    torchvision ResNet gives "layer4" and VGG "features". The probe is 224×224 whatever the
    example's size, so a model gets the same layer at every input size (a small input can
    shrink the last map to 1×1 and would otherwise move the choice); the example itself is the
    fallback for models that refuse 224×224.
    """
    finished: list[str] = []
    handles = []

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            if (
                isinstance(output, torch.Tensor)
                and output.dim() == 4
                and output.shape[-1] * output.shape[-2] > 1
                and not isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
            ):
                finished.append(name)

        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad(), eval_mode(model):
            try:
                model(example.new_zeros(1, 3, 224, 224))
            except Exception:
                finished.clear()
                model(example)
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise XcnnError("no 4-D feature map found for the CAM methods; pass target_layer=NAME of a conv layer")
    return finished[-1]


def check_layer_name(model: nn.Module, name: str) -> str:
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return name
    hint = did_you_mean(name, names, n=5, cutoff=0.4) or f"e.g. {', '.join(names[-5:])}"
    raise XcnnError(f"no layer named {name!r} in {type(model).__name__}; {hint}")


@dataclass(frozen=True)
class Grid:
    """Reads a token-grid layer's output as B×C×h×w and writes such a map back in its layout."""

    layout: str | None
    image_hw: tuple[int, int]
    prefix: int = 0

    def to_map(self, out: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return out
        if self.layout == "nhwc":
            if out.dim() != 4:
                raise XcnnError(f"layout 'nhwc' needs a B×h×w×C layer output, got {tuple(out.shape)}; try reshape = \"tokens\"")
            return out.permute(0, 3, 1, 2)
        if out.dim() != 3:
            raise XcnnError(f"layout 'tokens' needs a B×N×C layer output, got {tuple(out.shape)}; try reshape = \"nhwc\"")
        b, n, c = out.shape
        h, w = _token_grid(n - self.prefix, self.image_hw)
        return out[:, self.prefix:].transpose(1, 2).reshape(b, c, h, w)

    def from_map(self, grid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return grid
        if self.layout == "nhwc":
            return grid.permute(0, 2, 3, 1)
        return torch.cat([out[:, :self.prefix], grid.flatten(2).transpose(1, 2)], dim=1)


def _token_grid(n: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The h×w patch grid of n tokens for an H×W input (square patches)."""
    height, width = image_hw
    patch = math.sqrt(height * width / max(n, 1))
    h = max(1, round(height / patch))
    if h * (n // h) != n:
        raise XcnnError(f"{n} tokens do not form a grid for a {height}×{width} input; "
                        'give reshape = "nhwc" or "nchw", or another layer')
    return h, n // h


@contextmanager
def capture(model: nn.Module, layer: str | None, grid: Grid | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the (last) output of ``layer`` as a B×C×h×w map; the hook is removed whatever happens."""
    captured: dict[str, torch.Tensor] = {}
    if layer is None:
        yield captured
        return
    reader = grid or Grid(None, (0, 0))

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        activation = reader.to_map(output)
        captured["activation"] = activation
        # Hand the network a copy, rebuilt from the map so its gradient reaches the map: later
        # in-place ops (ResNet's `out += identity`, DenseNet's relu_) would otherwise overwrite
        # the activation we differentiate against.
        return reader.from_map(activation.clone(), output)

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BatchNorm statistics, no dropout), then each flag as it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training

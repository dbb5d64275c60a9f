"""The engine: one forward pass, one input-only backward pass per rule, all five maps.

    with Explainer(model, target_layer="auto") as ex:
        maps = ex.explain(images, targets)

The model is left exactly as it was: no module is replaced, no flag changed for longer than
the call (train/eval modes are restored), and every hook is removed, also when ``explain``
raises.
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xcnn.errors import XcnnError
from xcnn.names import METHODS
from xcnn.rules import RectifierRules, Rule

log = logging.getLogger(__name__)


# Which backward rule each method needs; Grad-CAM reads its layer gradient from the gradient
# pass and Guided Grad-CAM multiplies two maps we already have, so neither costs a pass.
_RULES_FOR: dict[str, tuple[Rule, ...]] = {
    "gradient": ("gradient",),
    "deconvnet": ("deconvnet",),
    "guided_backprop": ("guided",),
    "gradcam": ("gradient",),
    "guided_gradcam": ("gradient", "guided"),
}

Targets = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class Maps:
    """The maps of one batch. Gradient-like maps are B×3×H×W and signed; Grad-CAM is B×1×H×W."""

    logits: torch.Tensor
    targets: torch.Tensor
    layer: str | None
    gradient: torch.Tensor | None = None
    deconvnet: torch.Tensor | None = None
    guided_backprop: torch.Tensor | None = None
    gradcam: torch.Tensor | None = None
    guided_gradcam: torch.Tensor | None = None
    rectifiers: int = 0
    kept_activations: dict[str, int] = field(default_factory=dict)

    def get(self, method: str) -> torch.Tensor:
        if method not in METHODS:
            raise XcnnError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        value = getattr(self, method)
        if value is None:
            raise XcnnError(f"method {method!r} was not computed; pass it in methods=[...]")
        return value

    def methods(self) -> list[str]:
        return [m for m in METHODS if getattr(self, m) is not None]


class Explainer:
    """Saliency maps for a classifier. Use as a context manager (or call :meth:`close`).

    ``target_layer``: the Grad-CAM layer — "auto" (the last 4-D feature map before global
    pooling), a module name from ``model.named_modules()``, or None to disable Grad-CAM.
    """

    def __init__(self, model: nn.Module, target_layer: str | None = "auto") -> None:
        self.model = model
        self.target_layer = target_layer
        self._layer_name: str | None = None
        if target_layer not in (None, "auto"):
            self._layer_name = _check_layer_name(model, target_layer)

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept so the context-manager form reads naturally."""

    @property
    def layer(self) -> str | None:
        return self._layer_name

    def explain(
        self,
        images: torch.Tensor,
        targets: Targets = None,
        methods: Sequence[str] = METHODS,
    ) -> Maps:
        """All asked maps for ``images`` (B×3×H×W, normalised as the model expects).

        ``targets``: an int, B ints, a LongTensor[B], None (the top-1 class), or a callable
        ``logits -> LongTensor[B]`` evaluated after the forward pass (so choosing the target
        from the prediction costs no second forward pass).
        """
        methods = _check_methods(methods)
        if images.dim() != 4 or images.shape[1] != 3:
            raise XcnnError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        want_cam = any(m in ("gradcam", "guided_gradcam") for m in methods)
        if want_cam and self.target_layer is None:
            raise XcnnError("Grad-CAM needs a target layer; pass target_layer='auto' or a module name")
        rules = [r for r in ("guided", "deconvnet", "gradient") if any(r in _RULES_FOR[m] for m in methods)]

        with _eval_mode(self.model):
            if want_cam and self._layer_name is None:
                self._layer_name = find_target_layer(self.model, images[:1])
                log.info("Grad-CAM layer: %s", self._layer_name)
            x = images.detach().clone().requires_grad_(True)
            mode = RectifierRules()
            with _capture(self.model, self._layer_name if want_cam else None) as captured, mode:
                logits = self.model(x)
            if logits.dim() != 2:
                raise XcnnError(f"the model must return B×classes logits, got shape {tuple(logits.shape)}")
            target = _resolve_targets(targets, logits)
            score = logits.gather(1, target[:, None]).sum()
            grads: dict[Rule, torch.Tensor] = {}
            activation = captured.get("activation")
            if want_cam and activation is None:
                raise XcnnError(f"layer {self._layer_name!r} did not run in the forward pass; choose another target_layer")
            layer_grad = None
            for i, rule in enumerate(rules):
                mode.rule = rule
                inputs = [x] if not (rule == "gradient" and want_cam) else [x, activation]
                out = torch.autograd.grad(score, inputs, retain_graph=i < len(rules) - 1)
                grads[rule] = out[0]
                if len(out) > 1:
                    layer_grad = out[1]
            del score
            maps = Maps(
                logits=logits.detach(),
                targets=target,
                layer=self._layer_name if want_cam else None,
                rectifiers=mode.rectifiers,
                kept_activations=dict(mode.kept_activations),
            )
            if "gradient" in methods:
                maps.gradient = grads["gradient"]
            if "deconvnet" in methods:
                maps.deconvnet = grads["deconvnet"]
            if "guided_backprop" in methods:
                maps.guided_backprop = grads["guided"]
            if want_cam:
                cam = gradcam(activation.detach(), layer_grad, images.shape[-2:])
                if "gradcam" in methods:
                    maps.gradcam = cam
                if "guided_gradcam" in methods:
                    maps.guided_gradcam = grads["guided"] * cam
        if mode.kept_activations:
            log.debug("activations kept with their true derivative: %s", dict(mode.kept_activations))
        return maps


def gradcam(activation: torch.Tensor, grad: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Grad-CAM from layer activations A and ∂y_c/∂A (both B×K×h×w) -> B×1×H×W in [0, 1]."""
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    lo = cam.amin(dim=(2, 3), keepdim=True)
    span = cam.amax(dim=(2, 3), keepdim=True) - lo
    # A map with no positive evidence stays all zero (the metric reports it), never NaN.
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


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

    def hook(name: str) -> Callable:
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
        with torch.no_grad(), _eval_mode(model):
            try:
                model(example.new_zeros(1, 3, 224, 224))
            except Exception:
                finished.clear()
                model(example)
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise XcnnError("no 4-D feature map found for Grad-CAM; pass target_layer=NAME of a conv layer")
    return finished[-1]


@contextmanager
def _capture(model: nn.Module, layer: str | None) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the (last) output of ``layer``; the hook is removed whatever happens."""
    captured: dict[str, torch.Tensor] = {}
    if layer is None:
        yield captured
        return

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        captured["activation"] = output
        # Hand the network a copy: later in-place ops (ResNet's `out += identity`, DenseNet's
        # relu_) would otherwise overwrite the activation we differentiate against.
        return output.clone()

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BatchNorm statistics, no dropout), then each flag as it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _resolve_targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
    batch, classes = logits.shape
    if callable(targets):
        targets = targets(logits.detach())
    if targets is None:
        t = logits.detach().argmax(dim=1)
    else:
        t = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
    if t.shape != (batch,):
        raise XcnnError(f"targets must be one class or {batch} classes, got {t.numel()}")
    if int(t.min()) < 0 or int(t.max()) >= classes:
        raise XcnnError(f"target class out of range 0..{classes - 1}: {t.tolist()}")
    return t.to(logits.device)


def _check_methods(methods: Sequence[str]) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise XcnnError(f"unknown method(s) {unknown or methods}; use some of {', '.join(METHODS)}")
    return list(methods)


def _check_layer_name(model: nn.Module, name: str) -> str:
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"close names: {', '.join(close)}" if close else f"e.g. {', '.join(names[-5:])}"
    raise XcnnError(f"no layer named {name!r} in {type(model).__name__}; {hint}")

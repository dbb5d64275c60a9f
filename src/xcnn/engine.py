"""The engine: one forward pass, one input-only backward pass per rule, every asked map.

    with Explainer(model, target_layer="auto") as ex:
        maps = ex.explain(images, targets, methods=["gradcam", "layercam"])

What a method needs comes from its registry entry (xcnn.methods.registry): the rules of the
shared backward passes it reads, whether it reads the target layer, and its compute function.
The engine runs the forward pass once (capturing the layer if any asked method reads it), one
``torch.autograd.grad`` per rule the asked methods need (3 at most; the gradient pass also
returns ∂y_c/∂A), then calls each method's compute function in registry order with one
``Context``. Methods with extra passes of their own get the same ``Context`` and may run the
model again.

The model is left exactly as it was: no module is replaced, no flag changed for longer than
the call (train/eval modes are restored), and every hook is removed, also when ``explain``
raises.
"""
from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xcnn.errors import XcnnError, did_you_mean
from xcnn import registry
from xcnn.methods.context import Context
from xcnn.methods.registry import Options, deprecated_options
from xcnn.registry import DEFAULT_METHODS
from xcnn.rules import RectifierRules, Rule

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = DEFAULT_METHODS  # the thesis's five (old name, kept for imports)
DEFAULT_MEMORY_MB = 4096  # what the extra-pass methods may use at once (fits a 24 GB machine)

Targets = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None

# The order of the shared backward passes; the last one frees the graph.
_PASS_ORDER: tuple[Rule, ...] = ("guided", "deconvnet", "gradient")


class _UnknownName(XcnnError, AttributeError):
    """An unknown attribute of Maps: a one-line XcnnError that ``hasattr`` still reads as absent."""


@dataclass
class Maps:
    """The maps of one batch, by registry name: ``maps["layercam"]``, ``maps.get("layercam")`` or
    ``maps.layercam`` (None when that method was not asked). Signed methods are B×3×H×W, heat
    methods B×1×H×W in [0, 1].

    ``milliseconds[m]`` is what map m cost per image: its share of the batch's time divided by
    the batch size. The share is the forward pass split evenly among all asked methods, each
    backward pass split evenly among the asked methods whose registry rules include that pass,
    plus the method's own compute function (Grad-CAM's layer gradient comes with the gradient
    pass and is not charged apart). The one-off probe of ``target_layer="auto"`` is not counted.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    layer: str | None
    computed: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    rectifiers: int = 0
    kept_activations: dict[str, int] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-image numbers, e.g. "ig_completeness"
    milliseconds: dict[str, float] = field(default_factory=dict)

    def get(self, method: str) -> torch.Tensor:
        _method_entry(method)
        value = self.computed.get(method)
        if value is None:
            raise XcnnError(f"method {method!r} was not computed; pass it in methods=[...]")
        return value

    def __getitem__(self, method: str) -> torch.Tensor:
        return self.get(method)

    def __contains__(self, method: object) -> bool:
        return method in self.computed

    def __getattr__(self, name: str) -> torch.Tensor | None:
        # Only reached for names that are not fields: registry names read as maps.
        if name.startswith("_") or name == "computed":
            raise AttributeError(name)
        try:
            _method_entry(name)
        except XcnnError as err:
            raise _UnknownName(str(err)) from None
        return self.__dict__.get("computed", {}).get(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(registry.method_names()))

    def methods(self) -> list[str]:
        """The computed methods, in registry order."""
        return [m for m in registry.method_names() if m in self.computed]


class Explainer:
    """Saliency maps for a classifier.

    It holds nothing between calls (``explain`` removes its hooks before returning), so there is
    nothing to close; ``with Explainer(...) as ex:`` also works, as the examples write it.

    ``target_layer``: the layer the CAM methods read — "auto" (the last 4-D feature map before
    global pooling), a module name from ``model.named_modules()``, or None to disable them.
    ``layout``: how that layer's output reads as a B×C×h×w map — None / "nchw" (as it is),
    "tokens" (B×N×C, a ViT's: the model's ``num_prefix_tokens`` class/register tokens dropped,
    h×w from the input's aspect) or "nhwc" (B×h×w×C, a Swin stage's).
    """

    def __init__(self, model: nn.Module, target_layer: str | None = "auto", layout: str | None = None,
                 input_statistics: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        if layout not in LAYOUTS:
            raise XcnnError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
        # (mean, std) of the model's input normalisation, for methods that need the input's
        # bounds (LRP's ZBox); None: unknown (they default to ImageNet's)
        self.input_statistics = input_statistics
        self.model = model
        self.target_layer = target_layer
        self.layout = None if layout == "nchw" else layout
        self._layer_name: str | None = None
        if target_layer not in (None, "auto"):
            self._layer_name = _check_layer_name(model, target_layer)

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def layer(self) -> str | None:
        return self._layer_name

    def explain(
        self,
        images: torch.Tensor,
        targets: Targets = None,
        methods: Sequence[str] = DEFAULT_METHODS,
        *,
        params: Mapping[str, Any] | None = None,
        memory_mb: int = DEFAULT_MEMORY_MB,
        keys: Sequence[str] | None = None,
        options: Options | None = None,
    ) -> Maps:
        """The asked maps for ``images`` (B×3×H×W, normalised as the model expects).

        ``targets``: an int, B ints, a LongTensor[B], None (the top-1 class), or a callable
        ``logits -> LongTensor[B]`` evaluated after the forward pass (so choosing the target
        from the prediction costs no second forward pass). ``methods``: registry names.
        ``params``: {method: its parameter dataclass} for the methods that have any (the others
        get their defaults); ``memory_mb``: working memory the extra-pass methods may use at once
        (changes speed, never a map). ``keys``: one string per image (default its index in the
        batch) seeding per-photo randomness, so a photo gets the same map in any batch.
        ``options``: xcnn 0.2's ``Options`` (deprecated), read as params and memory_mb.
        """
        entries = [registry.get(n) for n in registry.check(methods)]
        if images.dim() != 4 or images.shape[1] != 3:
            raise XcnnError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        batch = int(images.shape[0])
        keys = _check_keys(keys, batch)
        if options is not None:
            if not isinstance(options, Options):
                raise XcnnError(f"options must be xcnn.methods.registry.Options, got {type(options).__name__}")
            params, memory_mb = deprecated_options(options)
        own = _method_params(entries, params)
        want_layer = [e.name for e in entries if e.needs_layer]
        if want_layer and self.target_layer is None:
            raise XcnnError(f"{', '.join(want_layer)} need a target layer; pass target_layer='auto' or a module name")
        rules = [r for r in _PASS_ORDER if any(r in e.rules for e in entries)]
        want_layer_grad = any(e.needs_layer and "gradient" in e.rules for e in entries)

        with _eval_mode(self.model):
            if want_layer and self._layer_name is None:
                self._layer_name = _auto_layer(self.model, images[:1])
                log.info("CAM layer: %s", self._layer_name)
            layer = self._layer_name if want_layer else None
            clock = _Clock(images.device)
            x = images.detach()
            if rules:
                x = x.clone().requires_grad_(True)
            mode = RectifierRules()
            # Without a backward pass (Eigen-CAM alone, extra-pass methods) no graph is built.
            hw = (int(images.shape[-2]), int(images.shape[-1]))
            grid = _Grid(self.layout, hw, int(getattr(self.model, "num_prefix_tokens", 0)))
            with torch.set_grad_enabled(bool(rules)), _capture(self.model, layer, grid) as captured, mode:
                logits = self.model(x)
            if logits.dim() != 2:
                raise XcnnError(f"the model must return B×classes logits, got shape {tuple(logits.shape)}")
            target = _resolve_targets(targets, logits)
            activation = captured.get("activation")
            if layer is not None and activation is None:
                raise XcnnError(f"layer {layer!r} did not run in the forward pass; choose another target_layer")
            clock.mark("forward")

            grads: dict[str, torch.Tensor] = {}
            layer_grad = None
            if rules:
                with torch.enable_grad():  # also under a caller's torch.no_grad()
                    score = logits.gather(1, target[:, None]).sum()
                for i, rule in enumerate(rules):
                    mode.rule = rule
                    inputs = [x, activation] if rule == "gradient" and want_layer_grad and activation is not None else [x]
                    out = torch.autograd.grad(score, inputs, retain_graph=i < len(rules) - 1)
                    grads[rule] = out[0]
                    if len(out) > 1:
                        layer_grad = out[1]
                    clock.mark(f"pass:{rule}")
                del score

            ctx = Context(
                model=self.model,
                images=x.detach(),
                targets=target,
                logits=logits.detach(),
                keys=keys,
                grads=grads,
                activation=None if activation is None else activation.detach(),
                layer_grad=layer_grad,
                layer=layer,
                memory_mb=memory_mb,
                layer_output=lambda replacement, own: grid.from_map(replacement, own),
                input_statistics=self.input_statistics,
            )
            del logits, activation, x
            extras: dict[str, torch.Tensor] = {}
            for e in entries:
                ctx.params, ctx.extras = own[e.name], {}
                result = e.fn(ctx)
                _check_map(e, result, ctx)
                ctx.maps[e.name] = result
                extras.update({f"{e.name}.{k}": v for k, v in ctx.extras.items()})
                clock.mark(e.name)

        spent = clock.spans()
        for rule in rules:
            users = [e.name for e in entries if rule in e.rules]
            for name in users:
                spent[name] += spent[f"pass:{rule}"] / len(users)
        for e in entries:
            spent[e.name] += spent["forward"] / len(entries)
        if mode.kept_activations:
            log.debug("activations kept with their true derivative: %s", dict(mode.kept_activations))
        return Maps(
            logits=ctx.logits,
            targets=target,
            layer=layer,
            computed={e.name: ctx.maps[e.name] for e in entries},
            rectifiers=mode.rectifiers,
            kept_activations=dict(mode.kept_activations),
            extras=extras,
            milliseconds={e.name: 1000 * spent[e.name] / batch for e in entries},
        )


class _Clock:
    """Seconds between marks. On a GPU, CUDA events time the work itself without making the host
    wait at each mark (waiting would leave the GPU idle while Python queues the next step)."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._marks: list[tuple[str, Any]] = [("", self._now())]

    def _now(self) -> Any:
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, label: str) -> None:
        self._marks.append((label, self._now()))

    def spans(self) -> dict[str, float]:
        """Each label -> seconds since the mark before it."""
        if self._cuda:
            self._marks[-1][1].synchronize()
        pairs = zip(self._marks, self._marks[1:])
        if self._cuda:
            return {label: start.elapsed_time(end) / 1000 for (_, start), (label, end) in pairs}
        return {label: end - start for (_, start), (label, end) in pairs}


def _check_map(entry: registry.Method, result: Any, ctx: Context) -> None:
    """A compute function's result has the shape its registry kind promises (catches a new
    method's slip at its source, not in the metrics)."""
    channels = 1 if entry.kind == "heat" else 3
    expected = (int(ctx.images.shape[0]), channels, *ctx.size)
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != expected or not result.is_floating_point():
        got = f"{tuple(result.shape)} {result.dtype}" if isinstance(result, torch.Tensor) else type(result).__name__
        raise XcnnError(f"method {entry.name!r} ({entry.origin}.{getattr(entry.fn, '__qualname__', '?')}) returned "
                        f"{got}; a {entry.kind} map must be a float tensor of shape {expected}")


def _method_params(entries: Sequence[registry.Method], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Each asked method's parameters: the given ones (checked to be its own dataclass), else its defaults."""
    given = dict(given or {})
    unknown = set(given) - set(registry.methods())
    if unknown:
        raise XcnnError(f"params for unknown methods {sorted(unknown)}; give {{method name: its parameters}}")
    out = {}
    for e in entries:
        value = given.get(e.name)
        if value is not None and (e.params is None or not isinstance(value, e.params)):
            want = e.params.__name__ if e.params else "nothing (it has no parameters)"
            raise XcnnError(f"params[{e.name!r}] must be {want}, got {type(value).__name__}")
        out[e.name] = value if value is not None else e.default_params()
    return out


def _method_entry(name: str) -> registry.Method:
    entry = registry.get(name)
    if entry.baseline:
        raise XcnnError(f"{name!r} is a model-free baseline, not a map of the engine; use a method name")
    return entry


def _check_keys(keys: Sequence[str] | None, batch: int) -> list[str]:
    if keys is None:
        return [str(i) for i in range(batch)]
    keys = [keys] if isinstance(keys, str) else list(keys)
    if len(keys) != batch:
        raise XcnnError(f"keys must give one string per image: got {len(keys)} for {batch} images")
    return [str(k) for k in keys]


# Per model: the automatic layer's probe is a forward pass, which a fresh Explainer for every
# call would otherwise pay every call. Keyed by the module tree (a replaced module probes again)
# and the example's shape, dtype and device (what the probe's fallback depends on).
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[tuple, str]]] = weakref.WeakKeyDictionary()


def _auto_layer(model: nn.Module, example: torch.Tensor) -> str:
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
        raise XcnnError("no 4-D feature map found for the CAM methods; pass target_layer=NAME of a conv layer")
    return finished[-1]


LAYOUTS = (None, "nchw", "tokens", "nhwc")


@dataclass(frozen=True)
class _Grid:
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
def _capture(model: nn.Module, layer: str | None, grid: _Grid | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the (last) output of ``layer`` as a B×C×h×w map; the hook is removed whatever happens."""
    captured: dict[str, torch.Tensor] = {}
    if layer is None:
        yield captured
        return
    grid = grid or _Grid(None, (0, 0))

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        activation = grid.to_map(output)
        captured["activation"] = activation
        # Hand the network a copy, rebuilt from the map so its gradient reaches the map: later
        # in-place ops (ResNet's `out += identity`, DenseNet's relu_) would otherwise overwrite
        # the activation we differentiate against.
        return grid.from_map(activation.clone(), output)

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


def _check_layer_name(model: nn.Module, name: str) -> str:
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return name
    hint = did_you_mean(name, names, n=5, cutoff=0.4) or f"e.g. {', '.join(names[-5:])}"
    raise XcnnError(f"no layer named {name!r} in {type(model).__name__}; {hint}")

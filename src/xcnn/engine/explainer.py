"""``Explainer`` and the ``Maps`` it returns: one call checks its request, then runs the steps of
:mod:`xcnn.engine.passes` (forward, backward, methods, cost) in the model's eval mode."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xcnn import registry
from xcnn.engine import passes
from xcnn.engine.layers import LAYOUTS, Grid, auto_layer, check_layer_name, eval_mode
from xcnn.engine.passes import PASS_ORDER
from xcnn.errors import XcnnError
from xcnn.methods.context import Context
from xcnn.methods.registry import Options, deprecated_options
from xcnn.registry import DEFAULT_METHODS
from xcnn.rules import Rule

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = DEFAULT_METHODS  # the thesis's five (old name, kept for imports)
DEFAULT_MEMORY_MB = 4096  # what the extra-pass methods may use at once (fits a 24 GB machine)

Targets = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


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
        computed: dict[str, torch.Tensor] = self.__dict__.get("computed", {})
        return computed.get(name)

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
            self._layer_name = check_layer_name(model, target_layer)

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
        params: Mapping[str, Any] | Options | None = None,
        memory_mb: int = DEFAULT_MEMORY_MB,
        keys: Sequence[str] | None = None,
    ) -> Maps:
        """The asked maps for ``images`` (B×3×H×W, normalised as the model expects).

        ``targets``: an int, B ints, a LongTensor[B], None (the top-1 class), or a callable
        ``logits -> LongTensor[B]`` evaluated after the forward pass (so choosing the target
        from the prediction costs no second forward pass). ``methods``: registry names.
        ``params``: {method: its parameter dataclass} for the methods that have any (the others
        get their defaults), or xcnn 0.2's ``Options`` (deprecated; read as params and
        memory_mb); ``memory_mb``: working memory the extra-pass methods may use at once
        (changes speed, never a map). ``keys``: one string per image (default its index in the
        batch) seeding per-photo randomness, so a photo gets the same map in any batch.
        """
        call = _Call.of(images, methods, params, memory_mb, keys)
        if call.layer_users and self.target_layer is None:
            raise XcnnError(f"{', '.join(call.layer_users)} need a target layer; pass target_layer='auto' or a module name")
        with eval_mode(self.model):
            layer = self._layer(images) if call.layer_users else None
            clock = passes.Clock(images.device)
            hw = (int(images.shape[-2]), int(images.shape[-1]))
            grid = Grid(self.layout, hw, int(getattr(self.model, "num_prefix_tokens", 0)))
            fwd = passes.forward(self.model, images, call.rules, layer, grid)
            target = _resolve_targets(targets, fwd.logits)
            clock.mark("forward")
            grads, layer_grad = passes.backward(fwd, target, call.rules, call.layer_grad, clock)
            ctx = Context(model=self.model, images=fwd.x.detach(), targets=target, logits=fwd.logits.detach(),
                          keys=call.keys, grads=grads, layer_grad=layer_grad, layer=layer, memory_mb=call.memory_mb,
                          activation=None if fwd.activation is None else fwd.activation.detach(),
                          layer_output=grid.from_map, input_statistics=self.input_statistics)
            mode = fwd.rules
            del fwd  # the logits' graph and the input's gradient-tracking copy, before the methods run
            extras = passes.run_methods(call.entries, ctx, call.params, clock)
        if mode.kept_activations:
            log.debug("activations kept with their true derivative: %s", dict(mode.kept_activations))
        return Maps(logits=ctx.logits, targets=target, layer=layer, computed={e.name: ctx.maps[e.name] for e in call.entries},
                    rectifiers=mode.rectifiers, kept_activations=dict(mode.kept_activations), extras=extras,
                    milliseconds=passes.milliseconds(clock.spans(), call.entries, call.rules, call.batch))

    def _layer(self, images: torch.Tensor) -> str:
        """The CAM layer: the one given, else the automatic one, probed on the first call."""
        if self._layer_name is None:
            self._layer_name = auto_layer(self.model, images[:1])
            log.info("CAM layer: %s", self._layer_name)
        return self._layer_name


@dataclass(frozen=True)
class _Call:
    """One call's checked request: the methods' entries and parameters, the backward passes
    they need (in pass order) and whether any reads the layer or its gradient."""

    entries: list[registry.Method]
    params: dict[str, Any]
    memory_mb: int
    keys: list[str]
    batch: int
    rules: list[Rule]
    layer_users: list[str]
    layer_grad: bool

    @classmethod
    def of(cls, images: torch.Tensor, methods: Sequence[str], params: Mapping[str, Any] | Options | None,
           memory_mb: int, keys: Sequence[str] | None) -> _Call:
        entries = [registry.get(n) for n in registry.check(methods)]
        if images.dim() != 4 or images.shape[1] != 3:
            raise XcnnError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        batch = int(images.shape[0])
        if isinstance(params, Options):
            params, memory_mb = deprecated_options(params)
        elif params is not None and not isinstance(params, Mapping):
            raise XcnnError(f"params must be {{method name: its parameters}}, got {type(params).__name__}")
        return cls(entries=entries, params=_method_params(entries, params), memory_mb=memory_mb,
                   keys=_check_keys(keys, batch), batch=batch,
                   rules=[r for r in PASS_ORDER if any(r in e.rules for e in entries)],
                   layer_users=[e.name for e in entries if e.needs_layer],
                   layer_grad=any(e.needs_layer and "gradient" in e.rules for e in entries))

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

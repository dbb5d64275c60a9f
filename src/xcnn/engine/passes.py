"""The steps of one engine call: the forward pass, the shared backward passes, the methods'
compute functions, and the split of the time spent among the asked methods."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xcnn import registry
from xcnn.engine.layers import Grid, capture
from xcnn.errors import XcnnError
from xcnn.methods.context import Context
from xcnn.rules import RectifierRules, Rule

# The order of the shared backward passes; the last one frees the graph.
PASS_ORDER: tuple[Rule, ...] = ("guided", "deconvnet", "gradient")


class Clock:
    """Seconds between marks. On a GPU, CUDA events time the work itself without making the host
    wait at each mark (waiting would leave the GPU idle while Python queues the next step)."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._marks: list[tuple[str, Any]] = [("", self._now())]

    def _now(self) -> Any:
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
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


@dataclass
class Forward:
    """What the forward pass leaves for the backward passes: the input it differentiates
    against, the logits (with their graph when any rule is asked), the layer's map, and the
    rectifier rules the backward passes switch between."""

    x: torch.Tensor
    logits: torch.Tensor
    activation: torch.Tensor | None
    rules: RectifierRules


def forward(model: nn.Module, images: torch.Tensor, rules: Sequence[Rule], layer: str | None, grid: Grid) -> Forward:
    """One forward pass, under the rectifier rules and capturing ``layer``; a graph is built only
    when a backward pass follows (Eigen-CAM alone and the extra-pass methods need none)."""
    x = images.detach()
    if rules:
        x = x.clone().requires_grad_(True)
    mode = RectifierRules()
    with torch.set_grad_enabled(bool(rules)), capture(model, layer, grid) as captured, mode:
        logits = model(x)
    if logits.dim() != 2:
        raise XcnnError(f"the model must return B×classes logits, got shape {tuple(logits.shape)}")
    activation = captured.get("activation")
    if layer is not None and activation is None:
        raise XcnnError(f"layer {layer!r} did not run in the forward pass; choose another target_layer")
    return Forward(x, logits, activation, mode)


def backward(fwd: Forward, target: torch.Tensor, rules: Sequence[Rule], layer_grad: bool,
             clock: Clock) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """∂y_c/∂x by rule, one ``autograd.grad`` each (the last frees the graph), and ∂y_c/∂A from
    the gradient pass when ``layer_grad``."""
    grads: dict[str, torch.Tensor] = {}
    dlayer = None
    if not rules:
        return grads, dlayer
    with torch.enable_grad():  # also under a caller's torch.no_grad()
        score = fwd.logits.gather(1, target[:, None]).sum()
    for i, rule in enumerate(rules):
        fwd.rules.rule = rule
        wants_layer = rule == "gradient" and layer_grad and fwd.activation is not None
        inputs = [fwd.x, fwd.activation] if wants_layer else [fwd.x]
        out = torch.autograd.grad(score, inputs, retain_graph=i < len(rules) - 1)  # type: ignore[arg-type]
        grads[rule] = out[0]
        if len(out) > 1:
            dlayer = out[1]
        clock.mark(f"pass:{rule}")
    return grads, dlayer


def run_methods(entries: Sequence[registry.Method], ctx: Context, params: Mapping[str, Any],
                clock: Clock) -> dict[str, torch.Tensor]:
    """Each method's compute function, in registry order, on one ``Context``; the per-image
    numbers they leave come back as ``{"method.name": values}``."""
    extras: dict[str, torch.Tensor] = {}
    for e in entries:
        ctx.params, ctx.extras = params[e.name], {}
        result = e.fn(ctx)
        _check_map(e, result, ctx)
        ctx.maps[e.name] = result
        extras.update({f"{e.name}.{k}": v for k, v in ctx.extras.items()})
        clock.mark(e.name)
    return extras


def milliseconds(spent: dict[str, float], entries: Sequence[registry.Method], rules: Sequence[Rule],
                 batch: int) -> dict[str, float]:
    """Each method's cost per image: the forward pass split evenly among all methods, each
    backward pass among the methods that read it, plus its own compute function."""
    for rule in rules:
        users = [e.name for e in entries if rule in e.rules]
        for name in users:
            spent[name] += spent[f"pass:{rule}"] / len(users)
    for e in entries:
        spent[e.name] += spent["forward"] / len(entries)
    return {e.name: 1000 * spent[e.name] / batch for e in entries}


def _check_map(entry: registry.Method, result: object, ctx: Context) -> None:
    """A compute function's result has the shape its registry kind promises (catches a new
    method's slip at its source, not in the metrics)."""
    channels = 1 if entry.kind == "heat" else 3
    expected = (int(ctx.images.shape[0]), channels, *ctx.size)
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != expected or not result.is_floating_point():
        got = f"{tuple(result.shape)} {result.dtype}" if isinstance(result, torch.Tensor) else type(result).__name__
        raise XcnnError(f"method {entry.name!r} ({entry.origin}.{getattr(entry.fn, '__qualname__', '?')}) returned "
                        f"{got}; a {entry.kind} map must be a float tensor of shape {expected}")

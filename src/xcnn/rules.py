"""How rectifiers back-propagate: the gradient, deconvnet and guided rules.

Every rectifier call inside a forward pass run under :class:`RectifierRules` is routed through
one autograd function whose backward reads the *current* rule when it runs. One forward pass
therefore serves several backward passes, one per rule, with ``retain_graph=True``.

Why a torch function mode and not module hooks: module hooks miss functional ``F.relu`` /
``torch.relu_`` (torchvision DenseNet's last activation), full backward hooks fail on in-place
ReLU, and a ReLU module object reused several times (torchvision ResNet) needs per-call state.
The mode sees every call of ``F.relu``, ``torch.relu(_)``, ``Tensor.relu(_)`` and
``F.hardtanh(x, 0, 6)`` (what ``nn.ReLU6`` calls), whatever issued it, and leaves the model's
modules untouched. Torch function modes live on a thread-local stack, so nothing global is
patched.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# The rule names live with the registry (torch-free), which a method's entry names them in.
from xcnn.registry import RULES, Rule

__all__ = ["RULES", "RectifierRules", "Rule", "true_derivatives"]

_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_INPLACE_RELU_FUNCS = {torch.relu_, torch.Tensor.relu_}
_HARDTANH_FUNCS = {F.hardtanh, F.hardtanh_, F.relu6}

# Activations that are not rectifiers keep their true derivative; we count them so a result
# can say how much of the network the rule did not reach.
_KEPT_ACTIVATIONS: dict[Any, str] = {
    F.silu: "silu",
    F.gelu: "gelu",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.elu: "elu",
    F.selu: "selu",
    F.celu: "celu",
    F.leaky_relu: "leaky_relu",
    F.mish: "mish",
    F.softplus: "softplus",
    F.prelu: "prelu",
    torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.Tensor.tanh: "tanh",
}


class _Suspended(threading.local):
    """How many :func:`true_derivatives` blocks this thread is inside."""

    depth = 0


_SUSPENDED = _Suspended()


@contextmanager
def true_derivatives() -> Iterator[None]:
    """Inside the block, rectifier calls run as the plain ops, whatever ``RectifierRules`` is
    active (in this thread): the model's own forward and gradients, as the extra-pass methods
    need them. Other torch function modes a caller set (``torch.device(...)``, a profiler's)
    stay in force: they are the caller's, and the model runs under them as anywhere else.

    A flag the rules read, not torch's mode stack: torch has no public way to take modes off its
    stack (``torch.overrides._pop_mode`` is private)."""
    _SUSPENDED.depth += 1
    try:
        yield
    finally:
        _SUSPENDED.depth -= 1


class _RuleState:
    """The rule the next backward pass applies; read by every rectifier node at backward time."""

    def __init__(self) -> None:
        self.rule: Rule = "gradient"


class _Rectify(torch.autograd.Function):
    """max(z, 0) or clamp(z, 0, 6) forward; backward by the rule current at backward time."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, upper: float | None, state: _RuleState, inplace: bool
    ) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(z)
            out = z.clamp_(min=0, max=upper)
        else:
            out = z.clamp(min=0, max=upper)
        # The output carries the forward mask (0 < out < upper exactly where 0 < z < upper) and
        # costs no extra memory: the next layer holds it anyway, as torch's own relu does.
        ctx.save_for_backward(out)
        ctx.upper = upper
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (out,) = ctx.saved_tensors
        rule = ctx.state.rule
        if rule != "gradient":
            g = g.clamp(min=0)
        if rule != "deconvnet":
            # aten's fused backward kernels apply the forward mask in one pass over g.
            if ctx.upper is None:
                g = torch.ops.aten.threshold_backward(g, out, 0.0)
            else:
                g = torch.ops.aten.hardtanh_backward(g, out, 0.0, ctx.upper)
        return g, None, None, None


class RectifierRules(TorchFunctionMode):
    """Context in which every rectifier call back-propagates by ``self.rule``.

    Set ``rule`` between backward passes; the forward pass must run inside the context, the
    backward passes may run anywhere (the nodes keep a reference to this object's state).
    """

    def __init__(self) -> None:
        super().__init__()
        self._state = _RuleState()
        self.rectifiers = 0
        self.kept_activations: Counter[str] = Counter()

    @property
    def rule(self) -> Rule:
        return self._state.rule

    @rule.setter
    def rule(self, value: Rule) -> None:
        if value not in RULES:
            raise ValueError(f"unknown rule {value!r}; use one of {RULES}")
        self._state.rule = value

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if _SUSPENDED.depth:
            return func(*args, **kwargs)
        if func in _RELU_FUNCS:
            inplace = func in _INPLACE_RELU_FUNCS or bool(kwargs.get("inplace", False))
            if len(args) > 1:  # F.relu(x, True)
                inplace = bool(args[1])
            return self._rectify(args[0], None, inplace)
        if func in _HARDTANH_FUNCS:
            lo, hi, inplace = _hardtanh_args(func, args, kwargs)
            if lo == 0.0 and hi > 0.0:  # ReLU6 and any other clipped rectifier
                return self._rectify(args[0], hi, inplace)
            self.kept_activations["hardtanh"] += 1
        elif func in _KEPT_ACTIVATIONS:
            self.kept_activations[_KEPT_ACTIVATIONS[func]] += 1
        return func(*args, **kwargs)

    def _rectify(self, z: torch.Tensor, upper: float | None, inplace: bool) -> torch.Tensor:
        self.rectifiers += 1
        if not (torch.is_grad_enabled() and z.requires_grad):
            # No graph to shape: behave exactly like the plain op (inference, frozen inputs).
            return z.clamp_(min=0, max=upper) if inplace else z.clamp(min=0, max=upper)
        # In-place on a leaf or a view of one is not allowed by autograd; fall back to a copy.
        inplace = inplace and not z.is_leaf and z._base is None
        out: torch.Tensor = _Rectify.apply(z, upper, self._state, inplace)
        return out


def _hardtanh_args(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[float, float, bool]:
    if func is F.relu6:
        inplace = bool(args[1]) if len(args) > 1 else bool(kwargs.get("inplace", False))
        return 0.0, 6.0, inplace
    names = ("input", "min_val", "max_val", "inplace")
    defaults = {"min_val": -1.0, "max_val": 1.0, "inplace": func is F.hardtanh_}
    bound = {**defaults, **dict(zip(names, args)), **kwargs}
    return float(bound["min_val"]), float(bound["max_val"]), bool(bound["inplace"])

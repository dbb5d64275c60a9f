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

Modules: ``explainer`` (``Explainer``, ``Maps``, the request's checks), ``passes`` (the steps of
one call: forward, backward, methods, cost per method), ``layers`` (the CAM layer: found,
read in its layout, captured).
"""
from __future__ import annotations

from xcnn.engine.explainer import DEFAULT_MEMORY_MB, METHODS, Explainer, Maps, Targets
from xcnn.engine.layers import LAYOUTS, find_target_layer

__all__ = ["DEFAULT_MEMORY_MB", "LAYOUTS", "METHODS", "Explainer", "Maps", "Targets", "find_target_layer"]

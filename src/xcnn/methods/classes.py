"""One class per registry method, Captum-style, each a thin layer over the engine:

    GuidedBackprop(model).attribute(images, target=281)
    LayerCAM(model, target_layer="layer4").attribute(images, target=281)
    Attribution(model, "layercam").attribute(images, target=281)     # any method by name

The classes are made from the registry, so a new registry entry has its class with no code
here; its name comes from the method's label ("Grad-CAM++" -> ``GradCAMPlusPlus``, "Input ×
Gradient" -> ``InputXGradient``). Each call runs only the passes its method needs. To get several
maps of the same images, use ``Explainer.explain``: it shares the forward pass between them.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xcnn.engine import Explainer, Targets
from xcnn.methods import registry
from xcnn.methods.registry import Options


class Attribution:
    """The map of one registry method. ``target_layer`` is read only by methods that need a layer
    (the CAMs); ``params`` are the method's parameters (its dataclass; default its defaults),
    ``memory_mb`` what its extra passes may use; ``options`` is xcnn 0.2's (deprecated)."""

    method = ""

    def __init__(self, model: nn.Module, method: str, target_layer: str | None = "auto",
                 *, params: Any = None, memory_mb: int = 4096, options: Options | None = None) -> None:
        (self.method,) = registry.check([method])
        self.params, self.memory_mb, self.options = params, memory_mb, options
        needs_layer = registry.get(self.method).needs_layer
        self.explainer = Explainer(model, target_layer=target_layer if needs_layer else None)

    def attribute(self, inputs: torch.Tensor, target: Targets = None, *,
                  keys: Sequence[str] | None = None) -> torch.Tensor:
        """B×3×H×W (signed methods) or B×1×H×W in [0, 1] (heat methods) for B×3×H×W ``inputs``."""
        params = None if self.params is None else {self.method: self.params}
        maps = self.explainer.explain(inputs, target, methods=[self.method], params=params, memory_mb=self.memory_mb,
                                      keys=keys, options=self.options)
        return maps.get(self.method)


class _Named(Attribution):
    """Base of the generated classes: the method is fixed by the class."""

    def __init__(self, model: nn.Module, target_layer: str | None = "auto", *, params: Any = None,
                 memory_mb: int = 4096, options: Options | None = None) -> None:
        super().__init__(model, type(self).method, target_layer, params=params, memory_mb=memory_mb, options=options)


def class_name(method: str) -> str:
    """The CamelCase class name of a registry method, from its label."""
    label = registry.get(method).label.replace("++", "PlusPlus").replace("×", "X")
    return re.sub(r"[^0-9A-Za-z]", "", label)


def _make(method: str) -> type[Attribution]:
    entry = registry.get(method)
    shape = "B×1×H×W in [0, 1]" if entry.kind == "heat" else "B×3×H×W, signed"
    doc = f"{entry.label} ({entry.reference}): ``attribute(x, target)`` -> {shape}."
    return type(class_name(method), (_Named,), {"method": method, "__doc__": doc, "__module__": __name__})


CLASSES: dict[str, type[Attribution]] = {m: _make(m) for m in registry.ALL_METHODS}
if len({cls.__name__ for cls in CLASSES.values()}) != len(CLASSES):
    raise RuntimeError("two registry labels give the same class name; make the labels distinct")
globals().update({cls.__name__: cls for cls in CLASSES.values()})

__all__ = ["CLASSES", "Attribution", "class_name", *(cls.__name__ for cls in CLASSES.values())]

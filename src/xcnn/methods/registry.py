"""The method registry as xcnn 0.2 named it: kept for old imports, backed by ``xcnn.registry``.

``get``, ``check``, ``label``, ``order`` and ``is_baseline`` ask the one registry (xcnn.registry),
where every method, built-in or a plugin's, is registered by the ``@xcnn.method`` decorator.
``ALL_METHODS``, ``SINGLE_PASS``, ``REGISTRY``, ``BASELINES`` and ``BASELINE_NAMES`` are read
from it when asked (plugins loaded by then included). ``Options``, 0.2's one bag of every
method's parameters, is deprecated: each method has its own parameter dataclass now
(``xcnn.registry.get(name).params``); the engine still takes an ``Options`` and converts it.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from xcnn.registry import DEFAULT_METHODS, Kind, Method, Rule, check, get

__all__ = ["DEFAULT_METHODS", "Kind", "Method", "Options", "Rule", "check", "get", "is_baseline", "label", "order"]


def label(name: str) -> str:
    from xcnn import registry

    entry = registry.methods().get(name)
    return entry.label if entry else name.replace("_", " ").capitalize()


def order(names: Iterable[str]) -> list[str]:
    """Methods in registry order, then baselines, then anything unknown (sorted)."""
    from xcnn import registry

    present = set(names)
    known = [*registry.method_names(), *registry.method_names(baselines=True)]
    return [n for n in known if n in present] + sorted(present - set(known))


def is_baseline(name: str) -> bool:
    from xcnn import registry

    entry = registry.methods().get(name)
    return bool(entry and entry.baseline)


def __getattr__(name: str) -> Any:
    from xcnn import registry

    if name == "ALL_METHODS":
        return registry.method_names()
    if name == "SINGLE_PASS":
        return tuple(n for n in registry.method_names() if not registry.get(n).extra_passes)
    if name == "BASELINE_NAMES":
        return registry.method_names(baselines=True)
    if name == "REGISTRY":
        return {n: m for n, m in registry.methods().items() if not m.baseline}
    if name == "BASELINES":
        return {n: m for n, m in registry.methods().items() if m.baseline}
    raise AttributeError(f"module 'xcnn.methods.registry' has no attribute {name!r}")


@dataclass(frozen=True)
class Options:
    """Deprecated (xcnn 0.2): the parameters of every method in one bag. Give each method its own
    instead: ``ex.explain(..., params={"smoothgrad": SmoothGradParams(samples=50)}, memory_mb=...)``."""

    ig_steps: int = 50
    smoothgrad_samples: int = 25
    smoothgrad_sigma: float = 0.15
    scorecam_top_k: int | None = None
    seed: int = 0
    memory_mb: int = 4096

    def params(self) -> dict[str, Any]:
        """Each built-in method's parameters as these options set them."""
        from xcnn.methods.perturbation import ScoreCAMParams
        from xcnn.methods.sampling import IntegratedGradientsParams, SmoothGradParams

        return {"integrated_gradients": IntegratedGradientsParams(self.ig_steps),
                "smoothgrad": SmoothGradParams(self.smoothgrad_samples, self.smoothgrad_sigma, self.seed),
                "scorecam": ScoreCAMParams(self.scorecam_top_k)}

    def identity(self) -> dict[str, Any]:
        return {"ig_steps": self.ig_steps, "smoothgrad_samples": self.smoothgrad_samples,
                "smoothgrad_sigma": self.smoothgrad_sigma, "scorecam_top_k": self.scorecam_top_k, "seed": self.seed}


def deprecated_options(options: Options) -> tuple[dict[str, Any], int]:
    """(params, memory_mb) from a 0.2 ``Options``, with a DeprecationWarning."""
    warnings.warn("xcnn.Options is deprecated: pass params={method: its parameter dataclass} and memory_mb",
                  DeprecationWarning, stacklevel=4)  # explain -> _Call.of -> here
    return options.params(), options.memory_mb

"""``[methods.NAME]``, ``[metrics]`` and ``plugins``: what the registries add to a run, each
method's and metric's parameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xcnn.errors import XcnnError, did_you_mean
from xcnn.experiment.config._read import Source, table_of, typed
from xcnn.methods.registry import Options


@dataclass(frozen=True)
class MethodsConfig:
    """The ``[methods.NAME]`` tables: (method, its parameters) for every method that has any,
    the registry's defaults where the config sets none."""

    params: tuple[tuple[str, Any], ...] = ()

    def method_params(self) -> dict[str, Any]:
        return dict(self.params)

    def params_identity(self, asked: tuple[str, ...]) -> dict[str, Any]:
        """The parameters of the built-in methods and of the ``asked`` ones: what maps depend on."""
        from xcnn import registry

        known = registry.methods()
        return {name: registry.params_identity(known[name], p) for name, p in self.params
                if name in known and (known[name].builtin or name in asked)}

    @classmethod
    def from_toml(cls, tables: Any, options: Options, src: Source) -> MethodsConfig:
        """Each method's parameters: its [methods.NAME] table over [run]'s 0.2 keys (``options``)
        over its defaults."""
        from xcnn import registry

        tables = table_of(tables, "methods", src)
        known = registry.methods()
        for name, table in tables.items():
            if name not in known or known[name].baseline:
                hint = did_you_mean(name, registry.method_names()) or f"known: {', '.join(registry.method_names())}"
                raise src.fail(f"methods.{name}", f"unknown method; {hint}")
            table_of(table, f"methods.{name}", src)
        legacy: dict[str, dict[str, Any]] = {
            "integrated_gradients": {"steps": options.ig_steps},
            "smoothgrad": {"samples": options.smoothgrad_samples, "sigma": options.smoothgrad_sigma, "seed": options.seed},
            "scorecam": {"top_k": options.scorecam_top_k}}
        out = []
        for name, entry in known.items():
            if entry.params is None:
                continue
            given = {k: v for k, v in legacy.get(name, {}).items()
                     if v is not None and v != getattr(entry.params(), k, None)}
            given.update(tables.get(name, {}))
            try:
                out.append((name, registry.parse_params(entry, given, f"methods.{name}")))
            except XcnnError as err:
                raise XcnnError(f"{src.file}: {err}") from None
        return cls(tuple(out))


@dataclass(frozen=True)
class MetricsConfig:
    """The ``[metrics]`` table: per-map metrics run on every record unless ``NAME = false`` turns
    one off; a ``[metrics.NAME]`` table sets a metric's parameters."""

    off: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()  # (metric, its parameters) where [metrics.NAME] sets any

    @classmethod
    def from_toml(cls, table: Any, src: Source) -> MetricsConfig:
        from xcnn import registry

        table = table_of(table, "metrics", src)
        known = registry.metrics()
        off, params = [], []
        for name, value in table.items():
            if name not in known:
                hint = did_you_mean(name, list(known)) or f"known: {', '.join(known)}"
                raise src.fail(f"metrics.{name}", f"unknown per-map metric; {hint}")
            if isinstance(value, dict):
                params.append((name, registry.parse_params(known[name], value, f"metrics.{name}")))
            elif typed(value, bool, f"metrics.{name}", src) is False:
                off.append(name)
        return cls(tuple(off), tuple(params))


def read_plugins(value: Any, src: Source) -> tuple[tuple[str, str], ...]:
    """``plugins = ["mymethods"]``: modules imported now, from the config's folder first, so their
    methods and metrics are known before anything else is checked."""
    from xcnn import registry

    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise src.fail("plugins", f'expected a list of module names, e.g. plugins = ["mymethods"], got {value!r}')
    try:
        return tuple(registry.load_plugins(value, src.base).items())
    except XcnnError as err:
        raise src.fail("plugins", str(err)) from None

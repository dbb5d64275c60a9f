"""``[checks]``: the optional checks of the maps (baselines, faithfulness, randomisation,
dependence and the registry's others); a check runs only when its key says true."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xcnn.experiment.config._read import Source, known, seed, table_of, toml_keys, typed, whole
from xcnn.experiment.config.run import Size, parse_size

DEFAULT_CHECK_PHOTOS = 8  # photos of a "photos"-scope check whose parameters do not say


@dataclass(frozen=True)
class Checks:
    """The ``[checks]`` table; the defaults (all off) are those of a config without one."""

    baselines: bool = False
    faithfulness: bool = False
    faithfulness_sizes: tuple[str, ...] = ("resized",)  # size labels, or "resized"
    faithfulness_steps: int = 20
    # A pair of curves costs 2 (steps - 1) forward passes per map: on every record, faithfulness
    # would cost ~70x the maps themselves. The first N pairs make it a fixed cost of the run
    # (benchmarks/run.py --checks: on the demo, every check at its default adds 7.3x a plain run,
    # deletion/insertion ~85 % of it).
    faithfulness_photos: int = 8  # 0: every (photo, category) pair
    randomisation: bool = False
    randomisation_photos: int = 4
    randomisation_steps: int = 5
    dependence: bool = False
    dependence_photos: int = 8
    seed: int = 0
    # (check, its parameters) of the registered checks beyond these three that the table turns
    # on (NAME = true, or a [checks.NAME] table), in registry order
    others: tuple[tuple[str, Any], ...] = field(default=(), metadata={"toml": None})

    @classmethod
    def from_toml(cls, table: dict[str, Any], sizes: tuple[Size, ...], src: Source) -> Checks:
        """A [checks] table: a check runs only when its key says true (or has a table of its
        parameters), as a user who lists one key expects. ``sizes``: the run's."""
        from xcnn import registry

        table = table_of(table, "checks", src)
        registered = registry.checks()
        known({k: v for k, v in table.items() if k not in registered}, set(toml_keys(cls)) | set(registered),
              "checks", src)
        table, others = _registered(table, src)
        kw: dict[str, Any] = {"others": others}
        for key in ("baselines", "faithfulness", "randomisation", "dependence"):
            if key in table:
                kw[key] = typed(table[key], bool, f"checks.{key}", src)
        for key in ("faithfulness_steps", "randomisation_photos", "randomisation_steps", "dependence_photos"):
            if key in table:
                kw[key] = whole(table[key], f"checks.{key}", src)
        if "faithfulness_photos" in table:
            kw["faithfulness_photos"] = whole(table["faithfulness_photos"], "checks.faithfulness_photos", src, 0,
                                              " (0 = every pair)")
        if "seed" in table:
            kw["seed"] = seed(table["seed"], "checks.seed", src)
        if "faithfulness_sizes" in table:
            kw["faithfulness_sizes"] = _sizes(table["faithfulness_sizes"], sizes, src)
        return cls(**kw)

    def faithfulness_run_sizes(self, sizes: tuple[Size, ...]) -> tuple[Size, ...]:
        """The run sizes (of ``sizes``) whose method records get the "maps"-scope checks' rows
        (deletion and insertion curves, ...)."""
        if not self.scoped("maps"):
            return ()
        wanted = set(self.faithfulness_sizes)
        return tuple(s for s in sizes if s.label in wanted or ("resized" in wanted and s.hw is not None))

    @property
    def any(self) -> bool:
        return self.baselines or bool(self.enabled())

    def enabled(self) -> list[tuple[str, Any]]:
        """(check name, its parameters) of every model check the table turns on, built-ins first."""
        from xcnn.metrics.checks import DependenceParams, FaithfulnessParams, RandomisationParams

        out: list[tuple[str, Any]] = []
        if self.faithfulness:
            out.append(("faithfulness", FaithfulnessParams(self.faithfulness_steps)))
        if self.randomisation:
            out.append(("randomisation", RandomisationParams(self.randomisation_steps, self.randomisation_photos)))
        if self.dependence:
            out.append(("dependence", DependenceParams(self.dependence_photos)))
        return out + list(self.others)

    def scoped(self, scope: str) -> list[tuple[str, Any]]:
        """The enabled checks of one scope ("maps" or "photos", see xcnn.registry.Check)."""
        from xcnn import registry

        return [(n, p) for n, p in self.enabled() if registry.get_check(n).scope == scope]

    def describe(self, sizes: tuple[Size, ...], check_size: Size | None) -> str:
        """Which checks run, at what size and on how many photos: the line a run logs before it starts."""
        if not self.any:
            return "checks: none (turn them on in [checks], e.g. baselines = true)"
        at = "no resized size in run.sizes, skipped" if check_size is None else f"at {check_size.label}"
        parts = ["baselines"] * self.baselines
        if self.faithfulness:
            photos = "every pair" if self.faithfulness_photos == 0 else f"first {self.faithfulness_photos} pairs"
            parts.append(f"faithfulness ({self.faithfulness_steps} steps, {photos}, at "
                         f"{', '.join(s.label for s in sizes) or 'no size of run.sizes'})")
        if self.randomisation:
            parts.append(f"randomisation ({self.randomisation_steps} steps, first {self.randomisation_photos} "
                         f"photos, {at})")
        if self.dependence:
            parts.append(f"dependence (first {self.dependence_photos} photos, {at})")
        for name, params in self.others:
            from xcnn import registry

            if registry.get_check(name).scope == "maps":
                own = getattr(params, "photos", None)
                n = min(own, self.faithfulness_photos) if own and self.faithfulness_photos else own or self.faithfulness_photos
                photos = "every pair" if n == 0 else f"first {n} pair{'s' * (n != 1)}"
                where = f"{photos}, at {', '.join(s.label for s in sizes) or 'no size of run.sizes'}"
            else:
                where = f"first {getattr(params, 'photos', DEFAULT_CHECK_PHOTOS)} photos, {at}"
            parts.append(f"{name} ({where})")
        return "checks: " + "; ".join(parts)


# A built-in check's [checks.NAME] table sets these flat keys of 0.2's [checks]
_BUILTIN_CHECK_KEYS = {"faithfulness": {"steps": "faithfulness_steps"},
                       "randomisation": {"steps": "randomisation_steps", "photos": "randomisation_photos"},
                       "dependence": {"photos": "dependence_photos"}}


def _registered(table: dict[str, Any], src: Source) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """The registry's checks the table names: a built-in one's [checks.NAME] table read into
    0.2's flat keys (the table returned), any other's as (name, its parameters)."""
    from xcnn import registry

    table = dict(table)
    others = []
    for name, entry in registry.checks().items():
        if name not in table or name == "baselines":
            continue
        value = table[name]
        if isinstance(value, dict):  # [checks.NAME]: on, with these parameters
            params = registry.parse_params(entry, value, f"checks.{name}")
            if name in _BUILTIN_CHECK_KEYS:
                table[name] = True
                table.update({flat: getattr(params, key) for key, flat in _BUILTIN_CHECK_KEYS[name].items()
                              if key in value})
            else:
                others.append((name, params))
            continue
        if not isinstance(value, bool):
            raise src.fail(f"checks.{name}", f"expected true, false or a [checks.{name}] table of its parameters, "
                                             f"got {value!r}")
        if name not in _BUILTIN_CHECK_KEYS and value:
            others.append((name, None if entry.params is None else entry.params()))
    return table, tuple(others)


def _sizes(value: Any, sizes: tuple[Size, ...], src: Source) -> tuple[str, ...]:
    labels = [s.label for s in sizes]
    if not isinstance(value, list) or not value:
        raise src.fail("checks.faithfulness_sizes", f'expected a list of run sizes or "resized", got {value!r}')
    out = []
    for v in value:
        size = None if v == "resized" else parse_size(v)
        label = "resized" if v == "resized" else (size.label if size else None)
        if label is None or (label != "resized" and label not in labels):
            raise src.fail("checks.faithfulness_sizes", f'{v!r} is not one of run.sizes {labels} nor "resized"')
        out.append(label)
    return tuple(dict.fromkeys(out))

"""``[run]``: which records (sizes, methods), how they are made (growth, the device, batches),
and where (the backend); and the sizes themselves."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from xcnn.data.images import DEFAULT_MAX_PIXELS  # the engine's peak for one such photo fits 24 GB
from xcnn.devices import DEVICE_HINT, check_device
from xcnn.errors import XcnnError
from xcnn.experiment.config._read import Source, in_range, known, number, seed, toml_keys, typed, whole
from xcnn.methods import registry
from xcnn.methods.registry import DEFAULT_METHODS, Options

SIDES = (8, 8192)  # the smallest and largest side a size may have


@dataclass(frozen=True)
class Size:
    """A run size: "original" (the photo's own, ``hw`` None), a side length, or height×width."""

    label: str  # "original", "224", "240x320"
    hw: tuple[int, int] | None  # None: the image's own size

    def __post_init__(self) -> None:
        if self.hw is not None and not all(SIDES[0] <= s <= SIDES[1] for s in self.hw):
            raise XcnnError(f"size {self.label!r}: each side must be between {SIDES[0]} and {SIDES[1]}")

    @property
    def group(self) -> str:
        return "original" if self.hw is None else "resized"


def parse_size(s: Any) -> Size | None:
    """A Size from "original", a side length (224 or "224") or "HxW"; None if it is none of them."""
    if s == "original":
        return Size("original", None)
    if isinstance(s, str) and re.fullmatch(r"\d+", s):
        s = int(s)
    if isinstance(s, int) and not isinstance(s, bool):
        h = w = s
    elif isinstance(s, str) and (hw := re.fullmatch(r"(\d+)x(\d+)", s)):
        h, w = int(hw.group(1)), int(hw.group(2))
    else:
        return None
    try:
        return Size(str(h), (h, w)) if h == w else Size(f"{h}x{w}", (h, w))
    except XcnnError:
        return None


# [run]'s 0.2 keys of the methods' parameters, read into Options (the TOML key -> its field)
OPTION_KEYS = {"ig_steps": "ig_steps", "smoothgrad_samples": "smoothgrad_samples", "smoothgrad_sigma":
               "smoothgrad_sigma", "scorecam_top_k": "scorecam_top_k", "noise_seed": "seed", "memory_mb": "memory_mb"}
NOT_READ = {"toml": None}  # a field no key of its own sets


@dataclass(frozen=True)
class RunConfig:
    """The ``[run]`` table."""

    sizes: tuple[Size, ...] = (Size("original", None), Size("224", (224, 224)))
    methods: tuple[str, ...] = DEFAULT_METHODS
    growth: float = 0.20
    batch_size: int = 8
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_target_rank: int | None = None  # None: every unit; K: only units whose target ranks 1..K
    options: Options = field(default=Options(), metadata=NOT_READ)  # the 0.2 keys (OPTION_KEYS)
    backend: str = "local"  # "local" or "ray"; never part of the identity
    address: str | None = None  # Ray: None starts a local cluster, "auto" or "HOST:PORT" joins one
    ship_photos: bool = False  # Ray: the driver sends photo bytes (no path every node sees)

    def __post_init__(self) -> None:
        check_device(self.device)
        if len({s.label for s in self.sizes}) != len(self.sizes):
            raise XcnnError(f"run.sizes: a size is listed twice: {[s.label for s in self.sizes]}")

    def check_size(self) -> Size | None:
        """The size of the randomisation and dependence checks: the first non-original one."""
        return next((s for s in self.sizes if s.hw is not None), None)

    @classmethod
    def keys(cls) -> set[str]:
        return set(toml_keys(cls)) | set(OPTION_KEYS)

    @classmethod
    def from_toml(cls, run: dict[str, Any], src: Source) -> RunConfig:
        known(run, cls.keys(), "run", src)
        kw: dict[str, Any] = {"options": _options(run, src)}
        if "sizes" in run:
            kw["sizes"] = _sizes(run["sizes"], src)
        if "methods" in run:
            kw["methods"] = _methods(run["methods"], src)
        if "growth" in run:
            kw["growth"] = number(run["growth"], "run.growth", src, in_range(run["growth"], 0, 10),
                                  "a number between 0 and 10 (0.20 = +20 % area)")
        for key in ("batch_size", "max_pixels"):
            if key in run:
                kw[key] = whole(run[key], f"run.{key}", src)
        if "device" in run:
            device = typed(run["device"], str, "run.device", src)
            try:
                kw["device"] = check_device(device)
            except XcnnError:
                raise src.fail("run.device", f"got {run['device']!r}; use {DEVICE_HINT}") from None
        if "max_target_rank" in run:
            k = run["max_target_rank"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise src.fail("run.max_target_rank", f"expected a whole number >= 1 (e.g. max_target_rank = 5: "
                               f"only targets in the model's top 5), or leave it out for no filter; got {k!r}")
            kw["max_target_rank"] = k
        kw.update(_backend(run, src))
        return cls(**kw)


def _methods(value: Any, src: Source) -> tuple[str, ...]:
    methods = typed(value, list, "run.methods", src)
    if not all(isinstance(m, str) for m in methods):
        raise src.fail("run.methods", f"expected a list of method names, got {methods!r}")
    try:
        # The registry's order, whatever the config's order, so records sort the same way.
        return tuple(registry.check(methods))
    except XcnnError as err:
        raise src.fail("run.methods", str(err)) from None


def _backend(run: dict[str, Any], src: Source) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "backend" in run:
        backend = typed(run["backend"], str, "run.backend", src)
        if backend not in ("local", "ray"):
            raise src.fail("run.backend", f'got {backend!r}; use "local" or "ray"')
        kw["backend"] = backend
    if "address" in run:
        kw["address"] = typed(run["address"], str, "run.address", src)
    if "ship_photos" in run:
        kw["ship_photos"] = typed(run["ship_photos"], bool, "run.ship_photos", src)
    return kw


def _sizes(value: Any, src: Source) -> tuple[Size, ...]:
    if not isinstance(value, list) or not value:
        raise src.fail("run.sizes", f'expected a list such as ["original", 224], got {value!r}')
    sizes = []
    for s in value:
        size = parse_size(s)
        if size is None:
            raise src.fail("run.sizes", f'{s!r} is not "original", a side length (e.g. 224) or "HxW" (e.g. "240x320")')
        sizes.append(size)
    labels = [s.label for s in sizes]
    if len(set(labels)) != len(labels):
        raise src.fail("run.sizes", f"a size is listed twice: {labels}")
    return tuple(sizes)


def _options(run: dict[str, Any], src: Source) -> Options:
    """[run]'s 0.2 keys of the built-in methods' parameters (a [methods.NAME] key wins over them)."""
    kw: dict[str, Any] = {}
    for key in ("ig_steps", "smoothgrad_samples", "memory_mb"):
        if key in run:
            kw[key] = whole(run[key], f"run.{key}", src)
    if "smoothgrad_sigma" in run:
        sigma = run["smoothgrad_sigma"]
        kw["smoothgrad_sigma"] = number(sigma, "run.smoothgrad_sigma", src, in_range(sigma, 0, 10) and sigma > 0,
                                        "a number in (0, 10] (a fraction of the photo's value range)")
    if "scorecam_top_k" in run:
        kw["scorecam_top_k"] = whole(run["scorecam_top_k"], "run.scorecam_top_k", src, 0, " (0 = every channel)") or None
    if "noise_seed" in run:
        kw["seed"] = seed(run["noise_seed"], "run.noise_seed", src)
    return Options(**kw)


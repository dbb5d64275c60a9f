"""The experiment's TOML config: parsed, checked as a whole before any work, hashed.

Layout (every key but ``data.categories`` and ``[[models]]`` has a default)::

    [data]
    demo = true                  # the offline demo set, or a folder to cache it in
    # format = "coco"            # ...or a dataset: "coco" (default), "voc", "imagenet-boxes", "folder"
    # ann_file = "instances_train2017.json"   # coco: the instances file and its photos
    # image_dir = "train2017"
    # root = "VOC2012"           # voc (+ split = "val"); folder: the folder holding masks.csv
    # box_dir = "val_xml"        # imagenet-boxes: image_dir + box_dir (one XML per photo)
    categories = ["traffic light", "dog"]
    images_per_category = 30     # or "all": every usable photo
    seed = 0
    min_area = 0.01              # smallest object area, as a fraction of the image
    targets = "imagenet"         # the class explained: "imagenet" (COCO -> ImageNet table), "label"
                                 # (the category's name among the model's classes), a CSV file
                                 # (category,classes) or a [data.targets] table: dog = ["n02085620", 3]

    [[models]]
    name = "resnet50"
    gradcam_layer = "layer4"     # default "auto"
    weights = "resnet50.pth"     # default: the model's ImageNet weights; "random" for tests
    # name = "timm:vit_small_patch16_224" or "python:package.module:factory" (docs/MODELS.md), with
    # mean = [..], std = [..], classes = [..] or "classes.txt", reshape = "tokens" | "nhwc" | "nchw"

    [run]
    sizes = ["original", 224]    # "original", a side length, or "HxW"
    methods = [...]              # any registry names; default: the thesis's five
    growth = 0.20                # mask dilation: area grows by this fraction
    batch_size = 8
    device = "auto"              # "cpu", "cuda", "cuda:1", "mps" or "auto"
    max_pixels = 6_000_000       # a larger photo (or size) is a per-photo failure, not an out-of-memory kill
    max_target_rank = 5          # default: none. Only units whose target is among the model's top K
                                 # classes at that size get maps and records (part of the identity);
                                 # the others are logged in RUN_DIR/filtered.jsonl. Baselines: not filtered
    backend = "local"            # or "ray" (address = "auto" / "HOST:PORT"; ship_photos = true)
    # parameters of the extra-pass methods (part of the run's identity) and their memory budget:
    ig_steps = 50, smoothgrad_samples = 25, smoothgrad_sigma = 0.15, scorecam_top_k = 0 (all),
    noise_seed = 0, memory_mb = 4096

    [checks]                     # optional; a check runs only when its key says true (absent: off)
    baselines = true             # model-free maps (uniform, centre, edges) as records with CNN "none"
    faithfulness = true          # deletion / insertion of every method's map ...
    faithfulness_sizes = ["resized"]   # ... at these run sizes ("resized": every non-original one)
    faithfulness_steps = 20
    faithfulness_photos = 8      # ... of the first N (photo, category) pairs; 0 = every one
    randomisation = true         # cascading model randomisation on the first photos ...
    randomisation_photos = 4
    randomisation_steps = 5
    dependence = true            # input and class dependence on the first photos
    dependence_photos = 8
    seed = 0

Relative paths are taken from the config file's folder.

A run's *identity* is what its records depend on (the data's content, each model's weights,
layer and the input statistics, classes and reshape it sets, growth, method parameters, the record
schema, data.targets when not "imagenet", run.max_target_rank when set); RUN_DIR keeps it and
refuses a config that changes it. What only says which records are wanted (categories, photos
per category, models, sizes, methods) may grow: a rerun computes only what is missing. The checks
are not part of the identity either: their rows (RUN_DIR/checks.jsonl) carry their own parameters.
"""
from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xcnn.data.dataset import file_hash
from xcnn.data.images import DEFAULT_MAX_PIXELS  # the engine's peak for one such photo fits 24 GB
from xcnn.errors import XcnnError, did_you_mean
from xcnn.methods import registry
from xcnn.methods.registry import DEFAULT_METHODS, Options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class ModelSpec:
    name: str
    gradcam_layer: str = "auto"
    weights: str | None = None  # None: the model's ImageNet weights; "random"; or a file path
    mean: tuple[float, ...] | None = None  # None: the model's own input statistics
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None  # the output classes' names (a classes file is read on parsing)
    reshape: str | None = None  # how the CAM layer reads as a map: "tokens", "nhwc", "nchw"; None: guessed

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of xcnn.models.load this entry sets."""
        return {"mean": self.mean, "std": self.std, "classes": self.classes, "layout": self.reshape}


@dataclass(frozen=True)
class Size:
    label: str  # "original", "224", "240x320"
    hw: tuple[int, int] | None  # None: the image's own size

    @property
    def group(self) -> str:
        return "original" if self.hw is None else "resized"


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
    others: tuple[tuple[str, Any], ...] = ()

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


@dataclass(frozen=True)
class Config:
    categories: tuple[str, ...]
    models: tuple[ModelSpec, ...]
    demo: bool = False
    demo_dir: str | None = None  # cache folder for the demo set; None: RUN_DIR/demo-data
    format: str = "coco"  # the dataset's format (xcnn.data.formats); the demo set is COCO
    ann_file: str | None = None
    image_dir: str | None = None
    root: str | None = None  # voc, folder
    split: str | None = None  # voc (None: "val")
    box_dir: str | None = None  # imagenet-boxes
    images_per_category: int | None = 30  # None: every usable photo (images_per_category = "all")
    seed: int = 0
    min_area: float = 0.01
    targets: str = "imagenet"  # "imagenet", "label" or "map" (then target_map)
    target_map: tuple[tuple[str, tuple[str | int, ...]], ...] = ()  # category -> model class names / indices
    sizes: tuple[Size, ...] = (Size("original", None), Size("224", (224, 224)))
    methods: tuple[str, ...] = DEFAULT_METHODS
    growth: float = 0.20
    batch_size: int = 8
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_target_rank: int | None = None  # None: every unit; K: only units whose target ranks 1..K
    options: Options = Options()  # [run]'s method keys of 0.2 (ig_steps, ...): read into params
    params: tuple[tuple[str, Any], ...] = ()  # (method, its parameters) for every method that has any
    metrics_off: tuple[str, ...] = ()  # per-map metrics turned off ([metrics] NAME = false)
    metric_params: tuple[tuple[str, Any], ...] = ()  # (metric, its parameters) where [metrics.NAME] sets any
    plugins: tuple[tuple[str, str], ...] = ()  # (module, sha256 of its source): for information only
    checks: Checks = Checks()  # never part of the identity
    backend: str = "local"  # "local" or "ray"; never part of the identity
    address: str | None = None  # Ray: None starts a local cluster, "auto" or "HOST:PORT" joins one
    ship_photos: bool = False  # Ray: the driver sends photo bytes (no path every node sees)
    source: str = field(default="", compare=False)  # the TOML file it came from

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [s.label for s in self.sizes]
        d.pop("source")
        d["checks"] = {**asdict(self.checks), "faithfulness_sizes": list(self.checks.faithfulness_sizes),
                       # every check turned on with its parameters, built-ins included: what the
                       # exports pick the current settings' rows by (they never import the registry)
                       "enabled": [[name, None if p is None else asdict(p)] for name, p in self.checks.enabled()]}
        return d

    def method_params(self) -> dict[str, Any]:
        """Every method's parameters (the registry's defaults where the config sets none)."""
        return dict(self.params)

    def params_identity(self) -> dict[str, Any]:
        """The parameters of the built-in methods and of the asked ones: what maps depend on."""
        from xcnn import registry

        known = registry.methods()
        return {name: registry.params_identity(known[name], p) for name, p in self.params
                if name in known and (known[name].builtin or name in self.methods)}

    def faithfulness_sizes(self) -> tuple[Size, ...]:
        """The run sizes whose method records get the "maps"-scope checks' rows (deletion and
        insertion curves, ...)."""
        if not self.checks.scoped("maps"):
            return ()
        wanted = set(self.checks.faithfulness_sizes)
        return tuple(s for s in self.sizes if s.label in wanted or ("resized" in wanted and s.hw is not None))

    def check_size(self) -> Size | None:
        """The size of the randomisation and dependence checks: the first non-original one."""
        return next((s for s in self.sizes if s.hw is not None), None)

    def identity(self, data_digest: str) -> dict[str, Any]:
        """What the records depend on; ``data_digest`` is the hash of the dataset's content."""
        out = {
            "schema": RECORD_SCHEMA,
            "data": data_digest,
            "growth": self.growth,
            "methods": self.params_identity(),
            "models": {m.name: _model_identity(m) for m in self.models},
        }
        changed = {name: asdict(p) for name, p in self.metric_params if p != type(p)()}
        if changed:  # absent = every metric at its defaults, so older runs keep their identity
            out["metrics"] = changed
        if self.max_target_rank is not None:  # absent = no filter, so older runs keep their identity
            out["max_target_rank"] = self.max_target_rank
        if self.targets != "imagenet":  # absent = the default, so older runs keep their identity
            out["targets"] = self.targets if self.targets == "label" else [[c, list(v)] for c, v in self.target_map]
        return out


RECORD_SCHEMA = 2  # bump when a record's fields or meaning change: older runs are then refused

_OPTION_KEYS = {"ig_steps", "smoothgrad_samples", "smoothgrad_sigma", "scorecam_top_k", "noise_seed", "memory_mb"}
_TOP_KEYS = {"plugins"}  # top-level keys that are not tables
_SECTIONS = {
    "data": {"demo", "format", "ann_file", "image_dir", "root", "split", "box_dir", "categories",
             "images_per_category", "seed", "min_area", "targets"},
    "models": {"name", "gradcam_layer", "weights", "mean", "std", "classes", "reshape"},
    "run": {"sizes", "methods", "growth", "batch_size", "device", "max_pixels", "max_target_rank", "backend",
            "address", "ship_photos"} | _OPTION_KEYS,
    "checks": {"baselines", "faithfulness", "faithfulness_sizes", "faithfulness_steps", "randomisation",
               "randomisation_photos", "randomisation_steps", "dependence", "dependence_photos", "seed",
               "faithfulness_photos"},
    "methods": set(),  # [methods.NAME] tables: each method's parameters (xcnn.registry)
    "metrics": set(),  # NAME = false turns a per-map metric off
}


def compare_identity(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, in words; models only where both have the name
    (adding a model to a run is fine, changing one is not)."""
    stored = migrate_identity(stored)
    changed = [k for k in ("schema", "data", "growth") if stored.get(k) != current.get(k)]
    before = stored.get("methods", {}) if isinstance(stored.get("methods"), dict) else {}
    changed += [f"parameters of {name}" for name, params in current.get("methods", {}).items()
                if name in before and before[name] != params]
    if stored.get("targets", "imagenet") != current.get("targets", "imagenet"):
        changed.append("targets")
    # a metric's parameters: records keep the values they were scored with, so changing them is
    # another run (adding or turning off a metric is not)
    before_metrics, now_metrics = stored.get("metrics", {}) or {}, current.get("metrics", {}) or {}
    changed += [f"parameters of metric {name}" for name in sorted(set(before_metrics) | set(now_metrics))
                if before_metrics.get(name) != now_metrics.get(name)]
    # which units have records at all: absent (an older run, or no filter) is None
    if stored.get("max_target_rank") != current.get("max_target_rank"):
        changed.append("max_target_rank")
    models = stored.get("models", {}) if isinstance(stored.get("models"), dict) else {}
    changed += [f"model {name}" for name, spec in current["models"].items() if name in models and models[name] != spec]
    return changed


def migrate_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """An identity written by xcnn 0.2 (one "options" bag of every method's parameters) in
    today's form ("methods": each method's own), so a 0.2 run folder resumes."""
    old = stored.get("options")
    if not isinstance(old, dict) or "methods" in stored:
        return stored
    out = {k: v for k, v in stored.items() if k != "options"}
    out["methods"] = {
        "scorecam": {"top_k": old.get("scorecam_top_k")},
        "integrated_gradients": {"steps": old.get("ig_steps")},
        "smoothgrad": {"samples": old.get("smoothgrad_samples"), "sigma": old.get("smoothgrad_sigma"),
                       "seed": old.get("seed")},
    }
    return out


def _model_identity(m: ModelSpec) -> dict[str, Any]:
    """A model's entry of the identity; the optional keys only when set, so the identity of a
    config without them stays what it was."""
    out: dict[str, Any] = {"gradcam_layer": m.gradcam_layer, "weights": _weights_identity(m.weights)}
    for key in ("mean", "std", "classes"):
        if getattr(m, key) is not None:
            out[key] = list(getattr(m, key))
    if m.reshape is not None:
        out["reshape"] = m.reshape
    return out


def _weights_identity(weights: str | None) -> str:
    """The published weights, "random", or the content hash of a weights file (so a moved
    file resumes and a replaced one does not)."""
    if weights is None or weights == "random":
        return weights or "published"
    return "sha256:" + file_hash(Path(weights))


def load_config(path: str | Path) -> Config:
    """Read and check a config file; any problem is one XcnnError line naming the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XcnnError(f"{path}: config file not found; give the path of a .toml file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise XcnnError(f"{path}: cannot read config ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise XcnnError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    where = str(path)

    def fail(key: str, what: str) -> XcnnError:
        return XcnnError(f"{where}: {key}: {what}")

    for key in raw:
        if key not in _SECTIONS and key not in _TOP_KEYS:
            raise fail(key, f"unknown section; known: {', '.join(sorted(set(_SECTIONS) | _TOP_KEYS))}")
    plugins = _plugins(raw.get("plugins", []), path.parent, fail)  # first: they add methods and metrics
    data = _table(raw.get("data", {}), "data", fail)
    run = _table(raw.get("run", {}), "run", fail)
    _known(data, "data", fail)
    _known(run, "run", fail)
    base = path.parent

    kw: dict[str, Any] = {"source": str(path), "plugins": plugins}
    demo = data.get("demo", False)
    if isinstance(demo, str):
        kw["demo"], kw["demo_dir"] = True, str((base / demo).resolve())
    elif isinstance(demo, bool):
        kw["demo"] = demo
    else:
        raise fail("data.demo", f"expected true/false or a cache folder, got {demo!r}")
    kw.update(_data_paths(data, kw["demo"], base, fail))

    if "categories" not in data:
        raise fail("data.categories", 'missing; list COCO category names, e.g. ["traffic light", "dog"]')
    cats = _typed(data["categories"], list, "data.categories", fail)
    if not cats or not all(isinstance(c, str) for c in cats):
        raise fail("data.categories", f"expected a non-empty list of names, got {cats!r}")
    if len(set(cats)) != len(cats):
        raise fail("data.categories", f"a category is listed twice: {cats!r}")
    kw.update(_targets(data.get("targets", "imagenet"), base, fail))
    if kw.get("targets", "imagenet") == "map":
        from xcnn.experiment.targets import map_classes

        for cat in cats:
            try:
                map_classes(kw["target_map"], cat)
            except XcnnError as err:
                raise fail("data.categories", str(err)) from None
    elif kw.get("targets", "imagenet") == "imagenet" and kw.get("format", "coco") in ("coco", "voc"):
        _check_categories(cats, fail)  # other formats name their own categories: checked on selection
    kw["categories"] = tuple(cats)

    if data.get("images_per_category") == "all":
        kw["images_per_category"] = None
    elif "images_per_category" in data:
        kw["images_per_category"] = _positive_int(data["images_per_category"], "data.images_per_category", fail)
    if "seed" in data:
        kw["seed"] = _seed(data["seed"], "data.seed", fail)
    if "min_area" in data:
        kw["min_area"] = _fraction(data["min_area"], "data.min_area", fail)

    kw["models"] = _models(raw.get("models"), base, fail)

    if "sizes" in run:
        kw["sizes"] = _sizes(run["sizes"], fail)
    if "methods" in run:
        methods = _typed(run["methods"], list, "run.methods", fail)
        if not all(isinstance(m, str) for m in methods):
            raise fail("run.methods", f"expected a list of method names, got {methods!r}")
        try:
            # The registry's order, whatever the config's order, so records sort the same way.
            kw["methods"] = registry.check(methods)
        except XcnnError as err:
            raise fail("run.methods", str(err)) from None
    if "growth" in run:
        g = run["growth"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 10:
            raise fail("run.growth", f"expected a number between 0 and 10 (0.20 = +20 % area), got {g!r}")
        kw["growth"] = float(g)
    if "batch_size" in run:
        kw["batch_size"] = _positive_int(run["batch_size"], "run.batch_size", fail)
    if "device" in run:
        dev = _typed(run["device"], str, "run.device", fail)
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", dev):
            raise fail("run.device", f'got {dev!r}; use "cpu", "cuda", "cuda:N", "mps" or "auto"')
        kw["device"] = dev
    if "max_pixels" in run:
        kw["max_pixels"] = _positive_int(run["max_pixels"], "run.max_pixels", fail)
    if "max_target_rank" in run:
        k = run["max_target_rank"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise fail("run.max_target_rank", f"expected a whole number >= 1 (e.g. max_target_rank = 5: only "
                       f"targets in the model's top 5), or leave it out for no filter; got {k!r}")
        kw["max_target_rank"] = k
    if "backend" in run:
        backend = _typed(run["backend"], str, "run.backend", fail)
        if backend not in ("local", "ray"):
            raise fail("run.backend", f'got {backend!r}; use "local" or "ray"')
        kw["backend"] = backend
    if "address" in run:
        kw["address"] = _typed(run["address"], str, "run.address", fail)
    if "ship_photos" in run:
        kw["ship_photos"] = _typed(run["ship_photos"], bool, "run.ship_photos", fail)
    kw["options"] = _options(run, fail)
    kw["params"] = _method_params(raw.get("methods", {}), kw["options"], where, fail)
    kw["metrics_off"], kw["metric_params"] = _metrics(raw.get("metrics", {}), fail)
    if "checks" in raw:
        checks = _table(raw["checks"], "checks", fail)
        _known({k: v for k, v in checks.items() if k not in registry_checks()}, "checks", fail,
               extra=tuple(registry_checks()))
        kw["checks"] = _checks(checks, kw.get("sizes", Config.__dataclass_fields__["sizes"].default), fail)
    return Config(**kw)


def _data_paths(data: dict[str, Any], demo: bool, base: Path, fail: Any) -> dict[str, Any]:
    """[data] format and the keys that format takes (paths resolved from the config's folder);
    a key of another format is refused rather than silently ignored."""
    from xcnn.data.formats import FORMATS, OPTIONAL, PATHS, needs, required

    fmt = _typed(data.get("format", "coco"), str, "data.format", fail)
    if fmt not in FORMATS:
        raise fail("data.format", f"unknown format {fmt!r}; use one of {', '.join(map(repr, FORMATS))}")
    given = [k for k in data if k in PATHS | OPTIONAL]
    if demo:
        if given or fmt != "coco":
            other = given[0] if given else "format"
            raise fail("data.demo", f"the demo set is built in; give either demo or a dataset ({other}), not both")
        return {}
    kw: dict[str, Any] = {"format": fmt}
    for key in given:
        if key not in FORMATS[fmt]:
            raise fail(f"data.{key}", f'not used by format = "{fmt}", which takes {needs(fmt)}')
    for key in required(fmt):
        if key not in data:
            hint = " or demo = true" if fmt == "coco" else ""
            raise fail(f"data.{key}", f'missing; format = "{fmt}" takes {needs(fmt)}{hint}')
    for key in given:
        value = _typed(data[key], str, f"data.{key}", fail)
        if not value.strip():
            raise fail(f"data.{key}", f"is empty; give {FORMATS[fmt][key]}")
        kw[key] = str((base / value).resolve()) if key in PATHS else value
    return kw


def _targets(value: Any, base: Path, fail: Any) -> dict[str, Any]:
    """[data] targets: "imagenet", "label", a CSV file (category,classes) or an inline table."""
    from xcnn.experiment.targets import parse_map, read_map

    if isinstance(value, dict):
        try:
            return {"targets": "map", "target_map": parse_map(value, "data.targets")}
        except XcnnError as err:
            raise fail("data.targets", str(err)) from None
    value = _typed(value, str, "data.targets", fail)
    if value in ("imagenet", "label"):
        return {"targets": value}
    file = (base / value).resolve()
    if not file.is_file():
        raise fail("data.targets", f'{value!r} is not "imagenet", "label" nor a CSV file (columns category,classes)')
    try:
        return {"targets": "map", "target_map": read_map(file)}
    except XcnnError as err:
        raise fail("data.targets", str(err)) from None


def registry_checks() -> dict[str, Any]:
    from xcnn import registry as plugins

    return plugins.checks()


# A built-in check's [checks.NAME] table sets these flat keys of 0.2's [checks]
_BUILTIN_CHECK_KEYS = {"faithfulness": {"steps": "faithfulness_steps"},
                       "randomisation": {"steps": "randomisation_steps", "photos": "randomisation_photos"},
                       "dependence": {"photos": "dependence_photos"}}


def _checks(table: dict[str, Any], sizes: tuple[Size, ...], fail: Any) -> Checks:
    """A [checks] table: a check runs only when its key says true (or has a table of its
    parameters), as a user who lists one key expects."""
    from xcnn import registry as plugins

    table = dict(table)
    others = []
    for name, entry in registry_checks().items():
        if name not in table or name == "baselines":
            continue
        value = table[name]
        if isinstance(value, dict):  # [checks.NAME]: on, with these parameters
            params = plugins.parse_params(entry, value, f"checks.{name}")
            if name in _BUILTIN_CHECK_KEYS:
                table[name] = True
                table.update({flat: getattr(params, key) for key, flat in _BUILTIN_CHECK_KEYS[name].items()
                              if key in value})
            else:
                others.append((name, params))
            continue
        if not isinstance(value, bool):
            raise fail(f"checks.{name}", f"expected true, false or a [checks.{name}] table of its parameters, "
                                         f"got {value!r}")
        if name not in _BUILTIN_CHECK_KEYS and value:
            others.append((name, None if entry.params is None else entry.params()))
    kw: dict[str, Any] = {"others": tuple(others)}
    for key in ("baselines", "faithfulness", "randomisation", "dependence"):
        if key in table:
            kw[key] = _typed(table[key], bool, f"checks.{key}", fail)
    for key in ("faithfulness_steps", "randomisation_photos", "randomisation_steps", "dependence_photos"):
        if key in table:
            kw[key] = _positive_int(table[key], f"checks.{key}", fail)
    if "faithfulness_photos" in table:
        n = table["faithfulness_photos"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise fail("checks.faithfulness_photos", f"expected a whole number >= 0 (0 = every pair), got {n!r}")
        kw["faithfulness_photos"] = n
    if "seed" in table:
        kw["seed"] = _seed(table["seed"], "checks.seed", fail)
    if "faithfulness_sizes" in table:
        value = table["faithfulness_sizes"]
        labels = [s.label for s in sizes]
        if not isinstance(value, list) or not value:
            raise fail("checks.faithfulness_sizes", f'expected a list of run sizes or "resized", got {value!r}')
        out = []
        for v in value:
            size = None if v == "resized" else parse_size(v)
            label = "resized" if v == "resized" else (size.label if size else None)
            if label is None or (label != "resized" and label not in labels):
                raise fail("checks.faithfulness_sizes", f'{v!r} is not one of run.sizes {labels} nor "resized"')
            out.append(label)
        kw["faithfulness_sizes"] = tuple(dict.fromkeys(out))
    return Checks(**kw)


def _options(run: dict[str, Any], fail: Any) -> Options:
    kw: dict[str, Any] = {}
    for key in ("ig_steps", "smoothgrad_samples", "memory_mb"):
        if key in run:
            kw[key] = _positive_int(run[key], f"run.{key}", fail)
    if "smoothgrad_sigma" in run:
        sigma = run["smoothgrad_sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= 10:
            raise fail("run.smoothgrad_sigma",
                       f"expected a number in (0, 10] (a fraction of the photo's value range), got {sigma!r}")
        kw["smoothgrad_sigma"] = float(sigma)
    if "scorecam_top_k" in run:
        k = run["scorecam_top_k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise fail("run.scorecam_top_k", f"expected a whole number >= 0 (0 = every channel), got {k!r}")
        kw["scorecam_top_k"] = k or None
    if "noise_seed" in run:
        kw["seed"] = _seed(run["noise_seed"], "run.noise_seed", fail)
    return Options(**kw)


def _plugins(value: Any, base: Path, fail: Any) -> tuple[tuple[str, str], ...]:
    """``plugins = ["mymethods"]``: modules imported now, from the config's folder first, so their
    methods and metrics are known before anything else is checked."""
    from xcnn import registry

    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail("plugins", f'expected a list of module names, e.g. plugins = ["mymethods"], got {value!r}')
    try:
        return tuple(registry.load_plugins(value, base).items())
    except XcnnError as err:
        raise fail("plugins", str(err)) from None


def _method_params(tables: Any, options: Options, where: str, fail: Any) -> tuple[tuple[str, Any], ...]:
    """Each method's parameters: its [methods.NAME] table over [run]'s 0.2 keys over its defaults."""
    from xcnn import registry

    tables = _table(tables, "methods", fail)
    known = registry.methods()
    for name, table in tables.items():
        if name not in known or known[name].baseline:
            hint = did_you_mean(name, registry.method_names()) or f"known: {', '.join(registry.method_names())}"
            raise fail(f"methods.{name}", f"unknown method; {hint}")
        _table(table, f"methods.{name}", fail)
    legacy: dict[str, dict[str, Any]] = {"integrated_gradients": {"steps": options.ig_steps},
              "smoothgrad": {"samples": options.smoothgrad_samples, "sigma": options.smoothgrad_sigma,
                             "seed": options.seed},
              "scorecam": {"top_k": options.scorecam_top_k}}
    out = []
    for name, entry in known.items():
        if entry.params is None:
            continue
        given = {k: v for k, v in legacy.get(name, {}).items() if v is not None and v != getattr(entry.params(), k, None)}
        given.update(tables.get(name, {}))
        try:
            out.append((name, registry.parse_params(entry, given, f"methods.{name}")))
        except XcnnError as err:
            raise XcnnError(f"{where}: {err}") from None
    return tuple(out)


def _metrics(table: Any, fail: Any) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """``[metrics] NAME = false``: per-map metrics run on every record unless turned off here;
    a ``[metrics.NAME]`` table sets a metric's parameters."""
    from xcnn import registry

    table = _table(table, "metrics", fail)
    known = registry.metrics()
    off, params = [], []
    for name, value in table.items():
        if name not in known:
            hint = did_you_mean(name, list(known)) or f"known: {', '.join(known)}"
            raise fail(f"metrics.{name}", f"unknown per-map metric; {hint}")
        if isinstance(value, dict):
            params.append((name, registry.parse_params(known[name], value, f"metrics.{name}")))
        elif _typed(value, bool, f"metrics.{name}", fail) is False:
            off.append(name)
    return tuple(off), tuple(params)


def _seed(value: Any, key: str, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise fail(key, f"expected a whole number >= 0, got {value!r}")
    return value


def _table(value: Any, key: str, fail: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(key, f"expected a [{key}] table")
    return value


def _known(table: dict[str, Any], section: str, fail: Any, extra: tuple[str, ...] = ()) -> None:
    for key in table:
        if key not in _SECTIONS[section]:
            known = sorted(_SECTIONS[section] | set(extra))
            hint = did_you_mean(key, known)
            raise fail(f"{section}.{key}", f"unknown key; {hint + ' ' if hint else ''}known: {', '.join(known)}")


def _typed(value: Any, kind: type, key: str, fail: Any) -> Any:
    # bool is an int to Python, never to a config reader
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise fail(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _positive_int(value: Any, key: str, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(key, f"expected a whole number >= 1, got {value!r}")
    return value


def _fraction(value: Any, key: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1):
        raise fail(key, f"expected a fraction in [0, 1), got {value!r}")
    return float(value)


def _check_categories(cats: list[str], fail: Any) -> None:
    from xcnn.data import imagenet_classes

    for cat in cats:
        try:
            imagenet_classes(cat)
        except XcnnError as err:
            raise fail("data.categories", f"{cat!r}: {err}; remove it from the list") from None


def _models(value: Any, base: Path, fail: Any) -> tuple[ModelSpec, ...]:
    from xcnn.models import check_weights_file

    if value is None:
        raise fail("models", 'missing; add at least one [[models]] table with name = "resnet50"')
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise fail("models", "expected one or more [[models]] tables")
    specs = []
    for i, m in enumerate(value):
        key = f"models[{i}]"
        _known(m, "models", lambda k, w, key=key: fail(k.replace("models", key, 1), w))
        if "name" not in m:
            raise fail(f"{key}.name", 'missing; e.g. name = "resnet50"')
        name = _typed(m["name"], str, f"{key}.name", fail)
        _check_model_name(name, f"{key}.name", fail)
        layer = _typed(m.get("gradcam_layer", "auto"), str, f"{key}.gradcam_layer", fail)
        weights = m.get("weights")
        if weights is not None:
            weights = _typed(weights, str, f"{key}.weights", fail)
            if weights != "random":
                try:
                    check_weights_file(base / weights)
                except XcnnError as err:
                    raise fail(f"{key}.weights", f"{err}, \"random\", or leave it out") from None
                weights = str((base / weights).resolve())
        specs.append(ModelSpec(name, layer, weights, *_model_extras(m, key, base, fail)))
    labels = [(s.name, s.gradcam_layer, s.weights) for s in specs]
    if len(set(s.name for s in specs)) != len(specs):
        raise fail("models", f"a model name is listed twice ({labels}); records are keyed by name")
    return tuple(specs)


def _model_extras(m: dict[str, Any], key: str, base: Path, fail: Any) -> tuple[Any, ...]:
    """mean, std, classes (a list, or a file of one name per line, read now so the identity
    holds the names) and reshape of one [[models]] table."""
    from xcnn.models import LAYOUTS, input_statistics
    from xcnn.models.factory import read_classes

    stats = []
    for k in ("mean", "std"):
        try:
            stats.append(None if m.get(k) is None else input_statistics(m[k], k))
        except XcnnError as err:
            raise fail(f"{key}.{k}", str(err)) from None
    classes = m.get("classes")
    if isinstance(classes, str):
        try:
            classes = tuple(read_classes(base / classes))
        except XcnnError as err:
            raise fail(f"{key}.classes", str(err)) from None
    elif classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
            raise fail(f"{key}.classes", f"expected a list of class names or a file with one per line, got {classes!r}")
        classes = tuple(c.strip() for c in classes)
    reshape = m.get("reshape")
    if reshape is not None and reshape not in LAYOUTS:
        raise fail(f"{key}.reshape", f"got {reshape!r}; use one of {', '.join(map(repr, LAYOUTS))}")
    return (*stats, classes, reshape)


def _check_model_name(name: str, key: str, fail: Any) -> None:
    from xcnn import models

    try:
        models.check_name(name)
    except XcnnError as err:
        raise fail(key, str(err)) from None


def _sizes(value: Any, fail: Any) -> tuple[Size, ...]:
    if not isinstance(value, list) or not value:
        raise fail("run.sizes", f'expected a list such as ["original", 224], got {value!r}')
    sizes = []
    for s in value:
        size = parse_size(s)
        if size is None:
            raise fail("run.sizes", f'{s!r} is not "original", a side length (e.g. 224) or "HxW" (e.g. "240x320")')
        sizes.append(size)
    labels = [s.label for s in sizes]
    if len(set(labels)) != len(labels):
        raise fail("run.sizes", f"a size is listed twice: {labels}")
    return tuple(sizes)


def parse_size(s: Any) -> Size | None:
    if s == "original":
        return Size("original", None)
    if isinstance(s, int) and not isinstance(s, bool):
        return Size(str(s), (s, s)) if 8 <= s <= 8192 else None
    if isinstance(s, str):
        if re.fullmatch(r"\d+", s):
            return parse_size(int(s))
        hw = re.fullmatch(r"(\d+)x(\d+)", s)
        if hw:
            h, w = int(hw.group(1)), int(hw.group(2))
            if not (8 <= h <= 8192 and 8 <= w <= 8192):
                return None
            return Size(str(h), (h, w)) if h == w else Size(f"{h}x{w}", (h, w))
    return None

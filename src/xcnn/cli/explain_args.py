"""`xcnn explain`'s command line read: the photos and their output names, the methods and
their parameters, the target class and the small option types."""
from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from xcnn.errors import XcnnError
from xcnn.experiment.config import Size
from xcnn.methods import registry
from xcnn.registry import DEFAULT_METHODS

log = logging.getLogger("xcnn.cli.explain")  # the command's warnings keep its name

# 0.2's flags, kept: each names one parameter of one built-in method
_ALIASES = {("integrated_gradients", "steps"): "--ig-steps", ("smoothgrad", "samples"): "--smoothgrad-samples",
            ("smoothgrad", "sigma"): "--smoothgrad-sigma", ("scorecam", "top_k"): "--scorecam-top-k",
            ("smoothgrad", "seed"): "--seed"}


def find_photos(paths: Sequence[Path]) -> list[Path]:
    """The photos to explain: files as given, a folder's image files (sorted, not its subfolders'),
    each once. A missing path or a folder without images is an error before any work."""
    from xcnn.data.images import is_image

    photos: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = []
            for file in sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")):
                if is_image(file):  # reads the header only; a folder also holds notes, masks' JSON, …
                    found.append(file)
                else:
                    log.warning("skipping %s: not an image file PIL can read", file)
            if not found:
                raise XcnnError(f"folder {path} holds no image files PIL can read; give a folder of photos")
            photos += found
        elif path.is_file():
            photos.append(path)
        else:
            raise XcnnError(f"photo {path} not found; give the path of an image file or a folder of them")
    return list({p.resolve(): p for p in photos}.values())  # a photo named twice is explained once


def output_stems(photos: Sequence[Path]) -> list[str]:
    """One distinct file-name stem per photo, so no photo's pictures overwrite another's: its own
    stem, with its folder's name in front where stems clash (a/cat.jpg, b/cat.png), then a number.
    A stem too long for a file name with its suffixes is cut and hashed (xcnn.files.slug)."""
    from xcnn.files import NAME_MAX, slug

    clashes = Counter(p.stem.casefold() for p in photos)  # casefold: macOS and Windows names ignore case
    taken: set[str] = set()
    stems = []
    for p in photos:
        stem = p.stem if clashes[p.stem.casefold()] == 1 else f"{p.resolve().parent.name}_{p.stem}"
        stem = stem if len(stem.encode("utf-8", "surrogatepass")) <= NAME_MAX else slug(stem)
        unique, n = stem, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique.casefold())
        stems.append(unique)
    return stems


def _builtin_names() -> tuple[str, ...]:
    """The built-in methods, for the help; none where torch is missing (`xcnn report` runs there)."""
    try:
        from xcnn import registry as reg

        return reg.method_names()
    except ImportError:
        return ()


def _add_param_options(p: argparse.ArgumentParser) -> None:
    """One option per parameter of each method (a --plugin's too), from its parameter dataclass:
    --integrated-gradients-steps, --smoothgrad-sigma, ... (and 0.2's names where they differ)."""
    import dataclasses

    try:
        from xcnn import registry as reg

        entries = [m for m in reg.methods().values() if m.params is not None]  # plugins' too, when loaded
    except ImportError:
        return
    for entry in entries:
        defaults = entry.default_params()
        for f in dataclasses.fields(defaults):
            flag = f"--{entry.name}-{f.name}".replace("_", "-")
            alias = _ALIASES.get((entry.name, f.name))
            names = [flag] + ([alias] if alias and alias != flag else [])
            default = getattr(defaults, f.name)
            shown = "every one" if default is None else "%(default)s"
            p.add_argument(*names, dest=f"param:{entry.name}.{f.name}", metavar=f.name.upper(),
                           type=_number_parser(default), default=default,
                           help=f"{entry.name}: {f.metadata.get('help', f.name)} (default: {shown})")


def _number_parser(default: object) -> type:
    return float if isinstance(default, float) else int


def method_params(args: argparse.Namespace, methods: Sequence[str]) -> dict[str, object]:
    """The asked methods' parameters from their options and --param, each validated by its dataclass."""
    from xcnn import registry as reg

    given: dict[str, dict[str, object]] = {}
    for key, value in vars(args).items():
        if key.startswith("param:"):
            method, _, field = key[len("param:"):].partition(".")
            given.setdefault(method, {})[field] = value
    for text in args.param or []:
        name, eq, value = text.partition("=")
        method, dot, field = name.strip().partition(".")
        if not (eq and dot and field):
            raise XcnnError(f"--param {text!r}: write METHOD.KEY=VALUE, e.g. smoothgrad.samples=50")
        given.setdefault(method, {})[field] = _literal(value.strip())
    out = {}
    for method in methods:
        entry = reg.get(method)
        table = {k: v for k, v in given.get(method, {}).items() if v is not None}
        if entry.params is not None or table:
            out[method] = reg.parse_params(entry, table, f"{method} parameters")
    return out


def _literal(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_methods(text: str) -> tuple[str, ...]:
    """'all', 'single-pass', 'default' or comma-separated registry names -> names in registry order."""
    from xcnn import registry as reg

    groups = {"all": reg.method_names(), "default": DEFAULT_METHODS,
              "single-pass": tuple(n for n in reg.method_names() if not reg.get(n).extra_passes)}
    names: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if word:
            names += groups.get(word, [word])
    try:
        return registry.check(dict.fromkeys(names))
    except XcnnError as err:
        raise XcnnError(f"--methods {text!r}: {err}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return value


def parse_target(text: str, categories: list[str], wnids: list[str] | None = None) -> int | None:
    """'top1' -> None (the engine takes the top class); '281', 'tabby cat', 'tabby' or 'n02123045' -> 281:
    the rule configs' targets follow (xcnn.data.classes.class_index)."""
    from xcnn.data.classes import class_index

    if text == "top1":
        return None
    if text.isdigit():
        if int(text) >= len(categories):
            raise XcnnError(f"--target {text}: the model's classes are 0..{len(categories) - 1}")
        return int(text)
    try:
        return class_index(text, categories, wnids, "--target")
    except XcnnError as err:
        raise XcnnError(f"--target: {err}") from None


def _name_tags(target: int | None, size: Size) -> str:
    """What tells this call's pictures apart from another call's: "-t281-s224" for class 281 (however
    --target spelled it) at 224×224; the defaults (top1, original) add nothing."""
    return ("" if target is None else f"-t{target}") + ("" if size.hw is None else f"-s{size.label}")


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not three numbers R,G,B (e.g. 0.485,0.456,0.406)")
    r, g, b = values
    return r, g, b

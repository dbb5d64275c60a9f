"""`xcnn explain PHOTO|FOLDER ...`: saliency maps of photos, as PNGs and one figure of them all per photo."""
from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xcnn.errors import XcnnError
from xcnn.methods import registry
from xcnn.registry import DEFAULT_METHODS
from xcnn.experiment.config import Size, parse_size

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 4096  # as the engine's (xcnn.engine), which this module must not import (torch)
# 0.2's flags, kept: each names one parameter of one built-in method
_ALIASES = {("integrated_gradients", "steps"): "--ig-steps", ("smoothgrad", "samples"): "--smoothgrad-samples",
            ("smoothgrad", "sigma"): "--smoothgrad-sigma", ("scorecam", "top_k"): "--scorecam-top-k",
            ("smoothgrad", "seed"): "--seed"}
EPILOG = """exit status: 0 every photo explained; 3 some of several photos failed (a warning names each, the
others are written); 2 a usage or input error (one line on stderr); 1 a bug (a traceback)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="saliency maps of photos", description=__doc__, epilog=EPILOG)
    p.add_argument("photos", type=Path, nargs="+", metavar="PHOTO",
                   help="image files (JPEG, PNG, …) or folders of them (a folder: its image files, sorted, "
                        "not its subfolders)")
    p.add_argument("--model", metavar="NAME", default="mobilenet_v2",
                   help="a torchvision CNN name, timm:NAME or python:package.module:factory (default: %(default)s)")
    p.add_argument("--weights", metavar="FILE",
                   help="state-dict file, or random (untrained); default: the model's published weights")
    p.add_argument("--classes", metavar="FILE|A,B,C",
                   help="the model's class names, one per output: a text file with one per line, or a "
                        "comma-separated list (default: the model's own; ImageNet's for 1000 outputs)")
    p.add_argument("--mean", metavar="R,G,B", type=_triple,
                   help="the model's input normalisation mean (default: the model's own)")
    p.add_argument("--std", metavar="R,G,B", type=_triple,
                   help="the model's input normalisation std (default: the model's own)")
    p.add_argument("--target", metavar="CLASS", default="top1",
                   help='top1 (default), a class index (281), a class name ("tabby cat" or "tabby") or a '
                        "WordNet id (n02123045)")
    p.add_argument("--size", default="original", help="original (default), a side (224) or HxW")
    p.add_argument("--layer", metavar="NAME", default=None, help="CAM layer (default: the model's own, else auto)")
    p.add_argument("--methods", metavar="NAMES", default="default",
                   help=f"comma-separated method names, or all, single-pass, default (default: default = "
                        f"{','.join(DEFAULT_METHODS)}); names: {', '.join(_builtin_names())}, and plugins'")
    _add_param_options(p)
    p.add_argument("--param", metavar="METHOD.KEY=VALUE", action="append", default=None,
                   help="a parameter of any method, a plugin's included, e.g. smoothgrad.samples=50 "
                        "(repeatable; default: each method's own)")
    p.add_argument("--plugin", metavar="MODULE", action="append", default=None,
                   help="import a module that registers methods (from the current folder or sys.path; "
                        "repeatable; default: none)")
    p.add_argument("--memory-mb", metavar="MB", type=_positive_int, default=DEFAULT_MEMORY_MB,
                   help="working memory the extra-pass methods may use at once; changes speed, never a map "
                        "(default: %(default)s)")
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("explain-out"),
                   help="output folder: PHOTO-METHOD.png per map and PHOTO-all.png; a --target or --size other "
                        "than the default goes into the names as the class index and the size, e.g. PHOTO-t281-s224-METHOD.png "
                        "(default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="overwrite pictures an earlier call wrote under the same names (default: refuse)")
    p.add_argument("--save-raw", action="store_true", help="also write each map as PHOTO-METHOD.npy (default: off)")
    p.add_argument("--device", metavar="DEVICE", default="auto",
                   help="torch device: cpu, cuda, cuda:N, mps or auto (a GPU when there is one; default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from xcnn import models
    from xcnn.data import load_image
    from xcnn.data.images import exif_orientation
    from xcnn.render import picture

    from xcnn import registry as reg

    reg.load_plugins(args.plugin or [], Path.cwd())
    methods = parse_methods(args.methods)
    params = method_params(args, methods)
    from xcnn.experiment.runner import resolve_device

    photos = find_photos(args.photos)
    if args.out.exists() and not args.out.is_dir():
        raise XcnnError(f"--out {args.out} is a file; give a folder for the pictures")
    device = resolve_device(args.device)
    size = parse_size(args.size)
    if size is None:
        raise XcnnError(f"--size {args.size!r}: use original, a side length of 8 to 8192 (224) or HxW (480x640)")
    stems = output_stems(photos)
    classes = None if args.classes is None else (
        Path(args.classes) if Path(args.classes).is_file() else [c.strip() for c in args.classes.split(",")])
    lm = models.load(args.model, weights=args.weights, device=device,  # once, for every photo
                     classes=classes, mean=args.mean, std=args.std)
    target = parse_target(args.target, lm.categories, lm.wnids)
    tags = _name_tags(target, size)
    written = [args.out / f"{stem}{tags}-{name}" for stem in stems for name in
               [*(f"{m}.png" for m in methods), "all.png", *(f"{m}.npy" for m in methods if args.save_raw)]]
    clash = next((f for f in written if f.exists()), None)
    if clash is not None and not args.force:
        raise XcnnError(f"{clash} exists (an earlier call wrote it); pass --force to overwrite, or choose another "
                        "--out")
    ex = lm.explainer(args.layer or lm.gradcam_layer)  # the model's layer, layout and input statistics

    def explain(path: Path, stem: str) -> None:
        """Every map of one photo, written as OUT/STEM-METHOD.png and OUT/STEM-all.png."""
        stem += tags
        # A photo to be resized only needs decoding: the engine's pixel budget applies to the input size.
        # Upright as a viewer shows it (no mask here to stay aligned with, unlike a dataset's photos).
        photo = load_image(path, max_pixels=None if size.hw is None else 400_000_000, upright=True)
        photo = resize_photo(photo, size)
        orientation = exif_orientation(path)
        turned = f" (rotated per EXIF orientation {orientation})" if orientation != 1 else ""
        if lm.fixed_size is not None and photo.shape[:2] != lm.fixed_size:
            h, w = lm.fixed_size
            raise XcnnError(f"--size {args.size}: {lm.name} takes only {h}×{w} inputs; "
                            f"pass --size {h if h == w else f'{h}x{w}'}")
        x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
        try:
            maps = ex.explain(lm.normalize(x), target, methods=methods, params=params, memory_mb=args.memory_mb)
        except RuntimeError as err:  # e.g. an input smaller than the network's kernels
            first = str(err).strip().splitlines()[0][:200]
            raise XcnnError(f"{lm.name} cannot explain a {photo.shape[0]}×{photo.shape[1]} input ({first}); "
                            "try a larger --size") from None
        c = int(maps.targets[0])
        prob = float(maps.logits.softmax(1)[0, c])
        log.info("%s%s: %s explains class %d (%s), p = %.3f; CAM layer %s", path.name, turned, lm.name, c,
                 lm.categories[c], prob, maps.layer)
        for name, values in maps.extras.items():
            log.info("%s: %s", name, ", ".join(f"{float(v):.4g}" for v in values.reshape(-1)))
        log.debug("milliseconds per map: %s", {m: round(v, 1) for m, v in maps.milliseconds.items()})

        args.out.mkdir(parents=True, exist_ok=True)
        pictures = {}
        for m in maps.methods():
            raw = maps.get(m)[0].detach().cpu().numpy()
            pictures[m] = picture(m, raw, photo)
            Image.fromarray(pictures[m]).save(args.out / f"{stem}-{m}.png")
            if args.save_raw:
                np.save(args.out / f"{stem}-{m}.npy", raw)
        title = f"{lm.name}: {lm.categories[c]} (class {c}, p = {prob:.2f})"
        grid_figure(photo, pictures, title, args.out / f"{stem}-all.png")
        log.info("wrote %d maps of %s to %s", len(pictures), path.name, args.out)

    from contextlib import ExitStack

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from xcnn.experiment import progress

    # As the run's (xcnn.experiment.progress.Progress): on a terminal, bars on stderr with the log
    # lines above them, the multi-pass methods' passes on a bar of their own; in a file, whole
    # lines only (a progress line at most every progress.LOG_EVERY seconds).
    live = progress.live_terminal()
    failed = 0
    with ExitStack() as stack:
        if live:
            stack.enter_context(logging_redirect_tqdm())
        if len(photos) == 1:  # one photo: its errors are the command's (one line, exit status 2)
            stack.enter_context(_passes(progress.PassBar(live)))
            explain(photos[0], stems[0])
            return 0
        bar = stack.enter_context(tqdm(total=len(photos), unit="photo", desc="xcnn explain", dynamic_ncols=True,
                                       disable=not live))
        done = 0
        passes = stack.enter_context(_passes(progress.PassBar(live, lambda: f"{done}/{len(photos)} photos", bar)))
        for path, stem in zip(photos, stems):
            try:
                explain(path, stem)
            except XcnnError as err:  # a damaged photo, one too small for the model: the others go on
                log.warning("skipped %s: %s", path, err)
                failed += 1
            passes.clear()  # also a loop an error cut short
            done += 1
            bar.update()
    if failed:
        log.warning("%d of %d photos failed; see the warnings above", failed, len(photos))
        return 3
    return 0


@contextmanager
def _passes(bar: Any) -> Iterator[Any]:
    """``bar`` (an xcnn.experiment.progress.PassBar) told the passes of the block, closed after it."""
    from xcnn.methods.passes import reporting

    try:
        with reporting(bar):
            yield bar
    finally:
        bar.close()


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


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number ≥ 0")
    return value


def resize_photo(photo: np.ndarray, size: Size) -> np.ndarray:
    if size.hw is None:
        return photo
    h, w = size.hw
    return np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))


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


def grid_figure(photo: np.ndarray, pictures: dict[str, np.ndarray], title: str, path: Path) -> None:
    """The photo and every map in a grid of at most 5 columns, so 5 to 15 panels stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("Photo", photo)] + [(registry.label(m), p) for m, p in pictures.items()]
    rows = math.ceil(len(panels) / 5)
    cols = math.ceil(len(panels) / rows)  # balanced rows: 6 panels are 2×3, not 5 + 1
    aspect = photo.shape[0] / photo.shape[1]
    side = 2.6
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, (side * aspect + 0.4) * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, panels):
        ax.imshow(img)
        ax.set_title(name, fontsize=11)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)

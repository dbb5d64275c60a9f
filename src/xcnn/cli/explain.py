"""`xcnn explain PHOTO|FOLDER ...`: saliency maps of photos, as PNGs and one figure of them all per photo."""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xcnn.cli.explain_args import (_add_param_options, _builtin_names, _name_tags, _positive_int, _triple,
                                   find_photos, method_params, output_stems, parse_methods, parse_target)
from xcnn.errors import XcnnError
from xcnn.methods import registry
from xcnn.registry import DEFAULT_METHODS
from xcnn.experiment.config import Size, parse_size

log = logging.getLogger(__name__)

__all__ = ["add_parser", "find_photos", "method_params", "output_stems", "parse_methods", "parse_target", "run"]

DEFAULT_MEMORY_MB = 4096  # as the engine's (xcnn.engine), which this module must not import (torch)
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
    from xcnn import registry as reg

    reg.load_plugins(args.plugin or [], Path.cwd())
    methods = parse_methods(args.methods)
    params = method_params(args, methods)
    photos = find_photos(args.photos)
    if args.out.exists() and not args.out.is_dir():
        raise XcnnError(f"--out {args.out} is a file; give a folder for the pictures")
    job = _Explaining.load(args, methods, params)
    stems = output_stems(photos)
    written = [args.out / f"{stem}{job.tags}-{name}" for stem in stems for name in
               [*(f"{m}.png" for m in methods), "all.png", *(f"{m}.npy" for m in methods if args.save_raw)]]
    clash = next((f for f in written if f.exists()), None)
    if clash is not None and not args.force:
        raise XcnnError(f"{clash} exists (an earlier call wrote it); pass --force to overwrite, or choose another "
                        "--out")
    job.ex = job.lm.explainer(args.layer or job.lm.gradcam_layer)  # the model's layer, layout and input statistics
    return _explain_all(job, photos, stems)


@dataclass
class _Explaining:
    """What every photo of one call shares: the model (loaded once), its explainer, the methods,
    their parameters, the size, the target and the tags in the output names."""

    args: argparse.Namespace
    lm: Any
    methods: tuple[str, ...]
    params: dict[str, object]
    size: Size
    target: int | None
    device: Any
    ex: Any = None

    @classmethod
    def load(cls, args: argparse.Namespace, methods: tuple[str, ...], params: dict[str, object]) -> _Explaining:
        from xcnn import models
        from xcnn.experiment.runner import resolve_device

        device = resolve_device(args.device)
        size = parse_size(args.size)
        if size is None:
            raise XcnnError(f"--size {args.size!r}: use original, a side length of 8 to 8192 (224) or HxW (480x640)")
        classes = None if args.classes is None else (
            Path(args.classes) if Path(args.classes).is_file() else [c.strip() for c in args.classes.split(",")])
        lm = models.load(args.model, weights=args.weights, device=device,  # once, for every photo
                         classes=classes, mean=args.mean, std=args.std)
        target = parse_target(args.target, lm.categories, lm.wnids)
        return cls(args, lm, methods, params, size, target, device)

    @property
    def tags(self) -> str:
        return _name_tags(self.target, self.size)

    def __call__(self, path: Path, stem: str) -> None:
        """Every map of one photo, written as OUT/STEM-METHOD.png and OUT/STEM-all.png."""
        from xcnn.data.images import exif_orientation
        from xcnn.render import picture

        photo = self._photo(path)
        maps = self._maps(photo)
        c = int(maps.targets[0])
        prob = float(maps.logits.softmax(1)[0, c])
        orientation = exif_orientation(path)
        turned = f" (rotated per EXIF orientation {orientation})" if orientation != 1 else ""
        log.info("%s%s: %s explains class %d (%s), p = %.3f; CAM layer %s", path.name, turned, self.lm.name, c,
                 self.lm.categories[c], prob, maps.layer)
        for name, values in maps.extras.items():
            log.info("%s: %s", name, ", ".join(f"{float(v):.4g}" for v in values.reshape(-1)))
        log.debug("milliseconds per map: %s", {m: round(v, 1) for m, v in maps.milliseconds.items()})

        out, stem = self.args.out, stem + self.tags
        out.mkdir(parents=True, exist_ok=True)
        pictures = {}
        for m in maps.methods():
            raw = maps.get(m)[0].detach().cpu().numpy()
            pictures[m] = picture(m, raw, photo)
            Image.fromarray(pictures[m]).save(out / f"{stem}-{m}.png")
            if self.args.save_raw:
                np.save(out / f"{stem}-{m}.npy", raw)
        title = f"{self.lm.name}: {self.lm.categories[c]} (class {c}, p = {prob:.2f})"
        grid_figure(photo, pictures, title, out / f"{stem}-all.png")
        log.info("wrote %d maps of %s to %s", len(pictures), path.name, out)

    def _photo(self, path: Path) -> np.ndarray:
        """The photo as the model takes it: decoded, upright, at the asked size."""
        from xcnn.data import load_image

        # A photo to be resized only needs decoding: the engine's pixel budget applies to the input size.
        # Upright as a viewer shows it (no mask here to stay aligned with, unlike a dataset's photos).
        photo = resize_photo(load_image(path, max_pixels=None if self.size.hw is None else 400_000_000, upright=True),
                             self.size)
        if self.lm.fixed_size is not None and photo.shape[:2] != self.lm.fixed_size:
            h, w = self.lm.fixed_size
            raise XcnnError(f"--size {self.args.size}: {self.lm.name} takes only {h}×{w} inputs; "
                            f"pass --size {h if h == w else f'{h}x{w}'}")
        return photo

    def _maps(self, photo: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float().div(255).to(self.device)
        try:
            return self.ex.explain(self.lm.normalize(x), self.target, methods=self.methods, params=self.params,
                                   memory_mb=self.args.memory_mb)
        except RuntimeError as err:  # e.g. an input smaller than the network's kernels
            first = str(err).strip().splitlines()[0][:200]
            raise XcnnError(f"{self.lm.name} cannot explain a {photo.shape[0]}×{photo.shape[1]} input ({first}); "
                            "try a larger --size") from None


def _explain_all(explain: _Explaining, photos: Sequence[Path], stems: Sequence[str]) -> int:
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


def resize_photo(photo: np.ndarray, size: Size) -> np.ndarray:
    if size.hw is None:
        return photo
    h, w = size.hw
    return np.asarray(Image.fromarray(photo).resize((w, h), Image.Resampling.BILINEAR))


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

"""`xcnn explain PHOTO`: the five maps of one photo, as PNGs and a side-by-side figure."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xcnn.engine import METHODS, Explainer
from xcnn.errors import XcnnError
from xcnn.names import METHOD_LABELS

log = logging.getLogger(__name__)



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="saliency maps of one photo", description=__doc__)
    p.add_argument("photo", type=Path)
    p.add_argument("--model", default="mobilenet_v2", help="model name (default: mobilenet_v2)")
    p.add_argument("--weights", help="state-dict file instead of the published ImageNet weights")
    p.add_argument("--target", default="top1", help='top1, an ImageNet index (281) or a class name ("tabby cat")')
    p.add_argument("--size", default="original", help="original (default), a side (224) or HxW")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the model's own, else auto)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--out", type=Path, default=Path("explain-out"))
    p.add_argument("--save-raw", action="store_true", help="also write each map as .npy")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcnn import models
    from xcnn.data import load_image
    from xcnn.render import picture

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.photo.is_file():
        raise XcnnError(f"photo {args.photo} not found; give the path of an image file")
    photo = resize_photo(load_image(args.photo), args.size)
    lm = models.load(args.model, weights=args.weights, device=args.device)
    target = parse_target(args.target, lm.categories)
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float().div(255).to(args.device)
    with Explainer(lm.model, target_layer=args.layer or lm.gradcam_layer) as ex:
        maps = ex.explain(lm.normalize(x), target, methods=methods)
    c = int(maps.targets[0])
    prob = float(maps.logits.softmax(1)[0, c])
    log.info("%s explains class %d (%s), p = %.3f; Grad-CAM layer %s", lm.name, c, lm.categories[c], prob, maps.layer)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.photo.stem
    pictures = {}
    for m in maps.methods():
        raw = maps.get(m)[0].detach().cpu().numpy()
        pictures[m] = picture(m, raw, photo)
        Image.fromarray(pictures[m]).save(args.out / f"{stem}-{m}.png")
        if args.save_raw:
            np.save(args.out / f"{stem}-{m}.npy", raw)
    title = f"{lm.name}: {lm.categories[c]} (class {c}, p = {prob:.2f})"
    side_by_side(photo, pictures, title, args.out / f"{stem}-all.png")
    log.info("wrote %d maps to %s", len(pictures), args.out)
    return 0


def resize_photo(photo: np.ndarray, size: str) -> np.ndarray:
    if size == "original":
        return photo
    try:
        h, w = (int(v) for v in size.lower().split("x")) if "x" in size.lower() else (int(size),) * 2
    except ValueError:
        raise XcnnError(f"--size {size!r}: use original, a side length (224) or HxW (480x640)") from None
    return np.asarray(Image.fromarray(photo).resize((w, h), Image.BILINEAR))


def parse_target(text: str, categories: list[str]) -> int | None:
    """'top1' -> None (the engine takes the top class), '281' -> 281, 'tabby cat' -> 281."""
    if text == "top1":
        return None
    if text.isdigit():
        if int(text) >= len(categories):
            raise XcnnError(f"--target {text}: ImageNet classes are 0..{len(categories) - 1}")
        return int(text)
    lowered = [c.lower() for c in categories]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    import difflib

    close = difflib.get_close_matches(text.lower(), lowered, n=4)
    raise XcnnError(f"--target {text!r} is not an ImageNet class name" + (f"; did you mean {', '.join(close)}?" if close else ""))


def side_by_side(photo: np.ndarray, pictures: dict[str, np.ndarray], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("Photo", photo)] + [(METHOD_LABELS[m], p) for m, p in pictures.items()]
    aspect = photo.shape[0] / photo.shape[1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3 * aspect + 0.7))
    for ax, (name, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img)
        ax.set_title(name, fontsize=12)
        ax.axis("off")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

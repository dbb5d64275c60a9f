"""`xcnn data`: fetch a seeded COCO subset (`coco`) or build the offline demo set (`demo`)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

SHORT = 3  # exit code: fewer usable images than asked, for data reasons (2: a usage or input error)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from xcnn.data.images import DEFAULT_MAX_PIXELS  # no torch: `xcnn report` runs without it

    p = sub.add_parser("data", help="download a COCO subset or build the offline demo set", description=__doc__)
    kinds = p.add_subparsers(dest="data_command", required=True, title="kinds", metavar="KIND")

    coco = kinds.add_parser(
        "coco",
        help="download COCO annotations and N seeded images per category",
        description="Download the COCO annotation archive once, extract instances_SPLIT.json, choose "
        "N images per category from the seed (as `xcnn run` would) and download only those. "
        "Resumable; writes ROOT/xcnn-selection.json. Exit code 3 when a category got fewer than N images.",
    )
    coco.add_argument("--root", type=Path, required=True, help="folder for annotations/ and the images")
    coco.add_argument("--split", default="train2017", help="COCO split, e.g. train2017 or val2017 (default: %(default)s)")
    coco.add_argument("--categories", required=True, help='comma-separated COCO categories, e.g. "traffic light,zebra"')
    coco.add_argument("--per-category", type=int, default=30, help="images per category (default: %(default)s)")
    coco.add_argument("--seed", type=int, default=0, help="selection seed (default: %(default)s)")
    coco.add_argument("--min-area", type=float, default=0.01,
                      help="skip images whose object covers less than this fraction (default: %(default)s)")
    coco.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                      help="skip images with more pixels than this (default: %(default)s)")
    coco.add_argument("--base-url", default=None,
                      help="server root instead of http://images.cocodataset.org (or set $XCNN_COCO_BASE_URL)")
    coco.set_defaults(func=_coco)

    demo = kinds.add_parser("demo", help="build the small offline demo set",
                            description="Write the offline demo set (14 photos with COCO-style masks) into DEST.")
    demo.add_argument("dest", type=Path, metavar="DEST", help="folder to write the demo set into")
    demo.set_defaults(func=_demo)


def _coco(args: argparse.Namespace) -> int:
    from xcnn.data.download import Selection, download_coco

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if not categories:
        raise XcnnError('--categories is empty; give e.g. --categories "traffic light,zebra"')
    from xcnn.data import imagenet_classes

    for c in categories:  # refuse a category the experiment cannot use before downloading anything
        imagenet_classes(c)
    wanted = Selection(args.per_category, args.seed, args.min_area, args.max_pixels)
    out = download_coco(args.root, args.split, categories, wanted, args.base_url)
    selection = json.loads(out.read_text())
    short = [f"{name} {len(ids)} of {args.per_category}" for name, ids in selection["images"].items()
             if len(ids) < args.per_category]
    if short:
        log.error("fewer usable images than asked: %s (skipped: %s); see the warnings above, selection in %s",
                  ", ".join(short), selection["skipped"] or "none", out)
        return SHORT
    log.info("done: %s", out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from xcnn.data import demo
    except ModuleNotFoundError as err:
        if err.name != "xcnn.data.demo":
            raise
        raise XcnnError("the demo set builder (xcnn.data.demo) is not available in this installation") from None
    build = getattr(demo, "build", None)
    if build is None:  # e.g. only the demo's data folder is present, not its builder
        raise XcnnError("the demo set builder xcnn.data.demo.build is not available in this installation")
    ann_file, image_dir = build(args.dest)
    log.info("demo set: annotations %s, images %s", ann_file, image_dir)
    return 0

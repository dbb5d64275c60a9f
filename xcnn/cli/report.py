"""`xcnn report RUN_DIR [--images ID,ID]`: tables, figures, image grids and index.html in RUN_DIR/report/."""
from __future__ import annotations

import argparse
from pathlib import Path

from xcnn.errors import XcnnError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, figures, image grids and index.html of a finished run",
                       description=__doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by 'xcnn run'")
    p.add_argument("--images", default=None, metavar="ID,ID",
                   help="image ids for the grids (ID or ID:category, comma-separated); default: the first 4")
    p.set_defaults(func=_run)


def parse_images(text: str | None) -> list[int | tuple[int, str]] | None:
    if text is None:
        return None
    chosen: list[int | tuple[int, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, _, category = item.partition(":")
        if not head.strip().isdigit():
            raise XcnnError(f"--images: '{item}' is not an image id; give ids like 139,785 or 139:dog")
        chosen.append((int(head), category.strip()) if category.strip() else int(head))
    if not chosen:
        raise XcnnError("--images is empty; give ids like 139,785 or leave the option out")
    return chosen


def _run(args: argparse.Namespace) -> int:
    from xcnn.report import write_report

    index = write_report(args.run_dir, images=parse_images(args.images))
    print(index)
    return 0

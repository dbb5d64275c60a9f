"""`xcnn report RUN_DIR [--images ID,ID] [--eps]`: tables, figures, image grids and index.html in RUN_DIR/report/.

Torch-free: it also runs as `python -m xcnn.cli.report RUN_DIR` where torch is not installed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, figures, image grids and index.html of a run (a killed or still "
                       "running one says so first)", description=__doc__)
    _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by 'xcnn run'")
    p.add_argument("--images", default=None, metavar="ID,ID",
                   help="image ids for the grids (ID or ID:category, comma-separated); default: informative ones")
    p.add_argument("--eps", action="store_true", help="also write every figure as EPS (default: PNG and SVG only)")
    p.set_defaults(func=_run)


def parse_images(text: str | None) -> list[int | str | tuple[int | str, str]] | None:
    """Ids as numbers where they are numbers (COCO), as text otherwise (photos named by path)."""
    if text is None:
        return None
    chosen: list[int | str | tuple[int | str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, _, category = item.rpartition(":") if ":" in item else (item, "", "")
        head = head.strip()
        if not head:
            raise XcnnError(f"--images: '{item}' names no image; give ids like 139,785 or 139:dog")
        image: int | str = _number(head) if head.isdigit() else head
        chosen.append((image, category.strip()) if category.strip() else image)
    if not chosen:
        raise XcnnError("--images is empty; give ids like 139,785 or leave the option out")
    return chosen


def _number(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # over Python's limit of 4300 digits: no record holds such an id
        raise XcnnError(f"--images: '{digits[:12]}...' ({len(digits)} digits) is not an image id; "
                        "give ids like 139,785") from None


def _run(args: argparse.Namespace) -> int:
    from xcnn.report import write_report

    images = parse_images(args.images)  # checked before anything is read or written
    index = write_report(args.run_dir, images=images, eps=args.eps)
    print(index)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The report command on its own (what `xcnn report` does, without loading other commands)."""
    parser = argparse.ArgumentParser(prog="xcnn report", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    _arguments(parser)
    from xcnn.cli import run_command  # the package's __init__ loads no command module

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

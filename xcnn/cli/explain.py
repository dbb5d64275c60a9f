"""`xcnn explain` (not yet implemented)."""
from __future__ import annotations

import argparse

from xcnn.errors import XcnnError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="(not yet implemented)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise XcnnError("'xcnn explain' is not implemented yet")

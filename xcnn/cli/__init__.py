"""`xcnn` command line: one sub-command per module; XcnnError becomes one line on stderr."""
from __future__ import annotations

import argparse
import logging
import sys

from xcnn.errors import XcnnError


def main(argv: list[str] | None = None) -> int:
    from xcnn.cli import data, explain, report, run

    parser = argparse.ArgumentParser(prog="xcnn", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (explain, data, run, report):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except XcnnError as err:
        print(f"xcnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

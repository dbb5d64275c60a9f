"""xcnn: which saliency method points at the object? Explain CNN classifiers with saliency maps
and score each map against object masks by energy concentration."""
from __future__ import annotations

import argparse
import logging
import sys

from xcnn.errors import XcnnError

EPILOG = """commands: explain (maps of photos), data (fetch COCO photos and masks), run (the experiment
of a config, resumable), report (tables, figures, HTML page of a run). `xcnn COMMAND -h` for each.
exit status: 0 done; 3 some units failed for data reasons; 2 a usage or input error; 1 a bug."""


def main(argv: list[str] | None = None) -> int:
    import importlib

    parser = argparse.ArgumentParser(prog="xcnn", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    sub = parser.add_subparsers(dest="command", required=True)
    # Each command module imports its heavy dependencies (torch) only when it runs, so
    # `xcnn report` works where torch is not installed.
    for name in ("explain", "data", "run", "report"):
        importlib.import_module(f"xcnn.cli.{name}").add_parser(sub)
    args = parser.parse_args(argv)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: XcnnError and local I/O errors become one line and exit status 2."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except XcnnError as err:
        print(f"xcnn: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder without permission: the machine, not a bug
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"xcnn: error: local I/O error{where}: {err.strerror or err}; free space or fix permissions, "
              "then run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

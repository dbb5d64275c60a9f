"""xcnn shows what a CNN image classifier looks at, and which saliency method shows it best.
`xcnn explain` draws saliency maps (gradient, Grad-CAM, guided backprop, LayerCAM, integrated
gradients, …) of a model's decision on your photos, for torchvision, timm or your own models;
`xcnn data` fetches COCO photos with their object masks (or builds the offline demo set); `xcnn run`
runs a config's experiment, scoring every map by how much of it falls on the object (resumable:
after an interruption, run the same command again); `xcnn report` turns a run into tables, figures
and an HTML page; `xcnn app` explains a photo and browses runs in the browser. Example: xcnn explain cat.jpg
--model mobilenet_v2 --out maps/"""
from __future__ import annotations

import argparse
import logging
import sys

from xcnn.errors import XcnnError

EPILOG = """`xcnn COMMAND -h` gives each command's options with their defaults.
exit status: 0 done; 3 some units failed for data reasons; 2 a usage or input error; 1 a bug."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    plugins = _plugins(argv)
    if plugins:  # before the parser: a plugin's methods bring options of their own
        from pathlib import Path

        from xcnn.registry import load_plugins

        try:
            load_plugins(plugins, Path.cwd())
        except XcnnError as err:
            print(f"xcnn: error: {err}", file=sys.stderr)
            return 2
    return run_command(build_parser().parse_args(argv))


def _plugins(argv: list[str]) -> list[str]:
    """The modules of every --plugin MODULE (or --plugin=MODULE) in argv."""
    found = []
    for i, word in enumerate(argv):
        if word == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif word.startswith("--plugin="):
            found.append(word.partition("=")[2])
    return found


def build_parser() -> argparse.ArgumentParser:
    """The `xcnn` parser with every command's."""
    import importlib

    parser = argparse.ArgumentParser(prog="xcnn", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    parser.add_argument("--version", action="version", version=f"xcnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    # Each command module imports its heavy dependencies (torch) only when it runs, so
    # `xcnn report` works where torch is not installed.
    for name in ("explain", "data", "run", "report", "app"):
        importlib.import_module(f"xcnn.cli.{name}").add_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xcnn")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import xcnn

        return str(xcnn.__version__)


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

"""`xcnn app [RUN_DIR ...]`: a page in the browser to explain a photo live and browse runs."""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="explain a photo and browse runs in the browser (needs xcnn[app])",
                       description=__doc__ + " Needs the app extra: pip install 'xcnn[app]'.")
    p.add_argument("runs", type=Path, nargs="*", metavar="RUN_DIR", help="run folders to browse (read-only)")
    p.add_argument("--model", metavar="NAME", action="append", default=None,
                   help="a model the page offers first (repeatable); the only way to offer a python:module:factory "
                        "model, which runs code (default: the offline mobilenet_v2 and efficientnet_lite0)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="state-dict file for the (single) --model (default: the model's published weights)")
    p.add_argument("--plugin", metavar="MODULE", action="append", default=None,
                   help="import a module that registers methods or metrics (repeatable; default: none)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; another one warns)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--device", metavar="DEVICE", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="pixel budget of an uploaded photo (default: xcnn's, 50 million)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for run_dir in args.runs:
        if not run_dir.is_dir():
            raise XcnnError(f"run folder {run_dir} does not exist; give a folder that 'xcnn run' wrote")
    names = args.model or []
    if args.weights is not None and len(names) != 1:
        raise XcnnError("--weights goes with exactly one --model")
    if args.weights is not None and not Path(args.weights).is_file():
        raise XcnnError(f"--weights {args.weights}: no such file")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise XcnnError("xcnn app needs the app extra: pip install 'xcnn[app]' (or bash scripts/setup.sh app)") from None
    from xcnn.app.server import Settings, create_app
    from xcnn.data import DEFAULT_MAX_PIXELS
    from xcnn.registry import load_plugins

    load_plugins(args.plugin or [], Path.cwd())
    if args.host not in LOCAL_HOSTS:
        log.warning("listening on %s: anyone who can reach this machine there can use the page and its CPU; "
                    "the page has no login", args.host)
    temp = Path(tempfile.mkdtemp(prefix="xcnn-app-"))
    settings = Settings(runs=list(args.runs), models={n: (str(Path(args.weights).resolve()) if args.weights else None)
                                                      for n in names},
                        device=args.device, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, temp=temp)
    app = None
    try:
        app = create_app(settings)
        log.info("xcnn app on http://%s:%d/ (uploads in %s, removed at exit)",
                 args.host if ":" not in args.host else f"[{args.host}]", args.port, temp)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if app is not None:
            app.state.explaining.close()
        shutil.rmtree(temp, ignore_errors=True)
    return 0

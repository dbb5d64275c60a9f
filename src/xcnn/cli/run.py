"""`xcnn run CONFIG.toml --out RUN_DIR`: the whole experiment, resumable after any interruption."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """exit status: 0 every unit done; 3 some units failed for data reasons (see RUN_DIR/failures.jsonl,
rerun to retry them); 2 a usage or input error (one line on stderr); 1 a bug (a traceback)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the experiment of a config file (rerun the same command to resume)",
        description="Compute every map, record and picture of a config's experiment into RUN_DIR. "
        "Interrupted runs resume where they stopped when the same command is run again.",
        epilog=EPILOG,
    )
    p.add_argument("config", type=Path, help="experiment config (.toml), e.g. configs/demo.toml")
    # text, not Path: Path("") is the current folder, and an empty --out must be refused
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="folder for records, exports, pictures: a new "
                   "or empty folder, or a run's to resume (a folder of other files is refused)")
    p.add_argument("--save-maps", action="store_true", help="also keep every map as float16 .npz under RUN_DIR/maps/ "
                   "(default: off)")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end (xcnn report RUN_DIR makes "
                   "it later; default: write it)")
    p.add_argument("--eps", action="store_true", help="the report's figures also as EPS (default: PNG and SVG only)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: no ADDRESS starts a local Ray, 'auto' or HOST:PORT joins a cluster "
                   "(default: [run] backend of the config, else this machine alone)")
    p.add_argument("--retry-killed", action="store_true",
                   help="retry units that were killed twice while running (default: they stay failed)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from xcnn.errors import XcnnError
    from xcnn.experiment import load_config, run
    from xcnn.experiment.layout import FAILURES_FILE

    if not args.out.strip():
        raise XcnnError("--out is empty; name the run folder, e.g. --out runs/demo")
    out = Path(args.out)
    config = load_config(args.config)
    if args.ray is not None:
        config = dataclasses.replace(config, run=dataclasses.replace(
            config.run, backend="ray", address=None if args.ray == "local" else args.ray))
    summary = run(config, out, save_maps=args.save_maps, retry_killed=args.retry_killed)
    if not args.no_report:
        from xcnn.report import write_report

        try:
            write_report(out, eps=args.eps)
        except XcnnError:
            if summary.records_total or not summary.failed:
                raise
            # every unit failed: no record to report, and failures.jsonl (named below) says why
            log.warning("no report: not one unit has records")
    if summary.failed:
        every = "all" if summary.failed == summary.units_total else f"{summary.failed} of"
        log.warning("%s %d units failed for data reasons; see %s", every, summary.units_total, out / FAILURES_FILE)
        return 3
    return 0

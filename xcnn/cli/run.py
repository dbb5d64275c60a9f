"""`xcnn run CONFIG.toml --out RUN_DIR`: the whole experiment, resumable after any interruption."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the experiment of a config file (rerun the same command to resume)",
        description="Compute every map, record and picture of a config's experiment into RUN_DIR. "
        "Interrupted runs resume where they stopped when the same command is run again.",
    )
    p.add_argument("config", type=Path, help="experiment config (.toml), e.g. configs/demo.toml")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="folder for records, exports, pictures")
    p.add_argument("--save-maps", action="store_true", help="also keep every map as float16 .npz under RUN_DIR/maps/")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end (xcnn report RUN_DIR makes it later)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from xcnn.experiment import load_config, run

    config = load_config(args.config)
    summary = run(config, args.out, save_maps=args.save_maps, report=not args.no_report)
    return 1 if summary.units_total and summary.failures and summary.records == 0 else 0

"""Whether the run a report shows has ended: a report of a run that was killed, or that another
process is still writing, must say so before anything else ("unfinished: N of M units done",
"still running"), or its tables pass for a whole experiment's.

- Still running: another process holds RUN_DIR/.lock (found with a non-blocking probe, so the
  writer is never held up). The run that writes its own report at its end holds the lock itself
  and is not "another process".
- Unfinished: config.json says when the run started but not when it finished (the run rewrites it
  at each start and adds "finished" at its end). Runs of versions that wrote neither are judged
  by their in-progress log: a unit started and never ended, and not failed, was cut off.
- N: the units (CNN or baselines, size, photo, category) whose records hold every method the
  config asks for, plus those left out by run.max_target_rank. M: config.json's "record_units",
  the record units the run planned (check batches not counted); older runs do not say.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from xcnn.runfolder.jsonl import read_lines
from xcnn.runfolder.layout import FAILURES_FILE, FILTERED_FILE, LOCK_FILE, STARTED_FILE
from xcnn.runfolder.lock import lock_holder

log = logging.getLogger(__name__)

PLANNED_KEY = "record_units"  # config.json: the record units the run planned


def failure_reasons(run_dir: Path) -> Counter[str]:
    """The failed units of the run's last call (failures.jsonl), counted by reason."""
    return Counter(str(row.get("reason") or "no reason given") for row in read_lines(run_dir / FAILURES_FILE))


def units_done(df: pd.DataFrame | None, config: dict[str, Any], run_dir: Path) -> int:
    """Units of this config with a record for every method it asks for, plus units it filtered."""
    methods = set(config.get("methods") or ())
    sizes = set(config.get("sizes") or ())
    categories = {c.strip().lower() for c in config.get("categories") or ()}  # as the data matches them

    # Models are part of the run's identity, sizes and categories are not: records of sizes or
    # categories an earlier config asked for may be in the run, and are not this config's units.
    def planned(size: str, category: str) -> bool:
        return (not sizes or size in sizes) and (not categories or category.strip().lower() in categories)

    done = 0
    if df is not None:
        for (cnn, size, _, category), have in df.groupby(["CNN", "size", "id", "class"])["method"]:
            # a baseline unit is written whole; a method unit lacks the methods added since it ran
            if planned(str(size), str(category)) and (cnn == "none" or methods <= set(have)):
                done += 1
    filtered = {_unit(row) for row in read_lines(run_dir / FILTERED_FILE)}
    return done + sum(1 for _, size, _, category in filtered if planned(size, category))


def _unit(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """A line's unit as the store keys it (ids as text)."""
    return (str(row.get("CNN")), str(row.get("size")), str(row.get("id")), str(row.get("class")))


def cut_off(run_dir: Path) -> int:
    """Units the in-progress log shows started and never ended, and not failed: a killed run's."""
    open_units: Counter[tuple[str, str, str, str]] = Counter()
    for row in read_lines(run_dir / STARTED_FILE):
        if row.get("event") == "end":
            open_units.pop(_unit(row), None)
        else:
            open_units[_unit(row)] += 1
    failed = {_unit(row) for row in read_lines(run_dir / FAILURES_FILE)}
    return sum(1 for key in open_units if key not in failed)


def units(n: int) -> str:
    return f"{n} unit" + ("" if n == 1 else "s")


def banner(run_dir: Path, body: dict[str, Any], df: pd.DataFrame | None) -> str:
    """The warning that opens the report of a run that has not ended; "" for an ended one."""
    holder = lock_holder(run_dir)
    failed = failure_reasons(run_dir)
    stopped = 0
    if holder is None:
        if body.get("finished"):
            return ""
        if not body.get("started"):  # older runs: the in-progress log is all there is
            stopped = cut_off(run_dir)
            if not stopped:
                return ""
    config = body["config"] if isinstance(body.get("config"), dict) else {}
    done, planned = units_done(df, config, run_dir), body.get(PLANNED_KEY)
    progress = (f"{min(done, planned)} of {units(planned)} done" if isinstance(planned, int)
                else f"{units(done)} done (this run does not record how many it planned)")
    if failed:
        progress += f", {sum(failed.values())} failed (see {FAILURES_FILE})"
    if holder is not None:
        return (f"still running: {progress} so far; {holder} holds {run_dir / LOCK_FILE} and is writing this run. "
                "This report shows the records written until now: run 'xcnn report' again once the run has ended.")
    if stopped:
        progress += f"; {units(stopped)} {'was' if stopped == 1 else 'were'} being computed when it stopped"
    return (f"unfinished: {progress}. The run stopped before its end (killed or interrupted): "
            "this report shows part of the experiment. Run the same 'xcnn run' command again to finish it "
            "(it resumes), and the report with it.")

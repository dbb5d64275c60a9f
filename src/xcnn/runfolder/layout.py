"""The run folder's file names, named once: the store writes these files, the exports and the
report read them. Imports nothing, so the report (run without torch) can use it too.

They are an on-disk contract: runs made by earlier versions must still be read.
"""
from __future__ import annotations

CONFIG_FILE = "config.json"  # the run's identity and config, as written
RECORDS_FILE = "records.jsonl"
FAILURES_FILE = "failures.jsonl"
STARTED_FILE = "started.jsonl"
CHECKS_FILE = "checks.jsonl"
FILTERED_FILE = "filtered.jsonl"  # units left out by run.max_target_rank: done, with no records
SKIPPED_FILE = "skipped.jsonl"  # photos the selection passed over, each with its reason (rewritten by every call)
LOCK_FILE = ".lock"

# The exports, rewritten whole from the JSON-lines files (xcnn.experiment.export).
EXP_FILE = "exp.json"  # the thesis's layout
RECORDS_CSV = "records.csv"
CHECKS_CSV = "checks.csv"

PICTURES_DIR = "pictures"  # the worker's photos, masks and maps as pictures: pictures/<size>/...
MAPS_DIR = "maps"  # --save-maps: maps/<CNN>/<size>/<photo>_<category>.npz

"""The demo's numbers stay those of xcnn 0.2: its records and check rows, committed as
tests/fixtures/v02/ (made by `xcnn run configs/demo.toml` at 0.2.0), against a run of today's
code (the slow demo test of tests/test_run.py). Every numeric field agrees within 1e-6; timings
and picture paths may change."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "v02"
RECORD_KEY = ("CNN", "size", "id", "class", "method")
CHECK_KEY = (*RECORD_KEY, "test", "measure", "step", "steps", "seed")
# The fixtures were made with torch on 2 CPU threads; CPU convolutions sum in another order on
# another thread count, which moves P by ~1e-5, so the comparison runs on as many.
THREADS = 2
CHECK_TOL = 1e-5


def read(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def by_key(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    return {tuple(str(r.get(k)) for k in key): r for r in rows}


def differences(old: dict[tuple, dict[str, Any]], new: dict[tuple, dict[str, Any]], tol: float = 1e-6) -> list[str]:
    """Where two runs disagree: a missing row, or a field of the old row whose value differs."""
    out = []
    for key, before in old.items():
        after = new.get(key)
        if after is None:
            out.append(f"{key}: missing")
            continue
        for field, a in before.items():
            b = after.get(field)
            if isinstance(a, float) or isinstance(b, float):
                same = (a is None and b is None) or (a is not None and b is not None and
                                                     (math.isclose(a, b, rel_tol=tol, abs_tol=tol)))
            else:
                same = a == b
            if not same:
                out.append(f"{key} {field}: {a!r} then, {b!r} now")
    return out


def test_differences_sees_a_change() -> None:
    old = by_key([{"CNN": "m", "size": "1", "id": 1, "class": "c", "method": "g", "P": 0.5}], RECORD_KEY)
    assert differences(old, old) == []
    moved = by_key([{"CNN": "m", "size": "1", "id": 1, "class": "c", "method": "g", "P": 0.5 + 2e-6}], RECORD_KEY)
    assert differences(old, moved) and differences(old, {}) == [f"{next(iter(old))}: missing"]


def assert_numbers_of_v02(out: Path) -> None:
    """A demo run in ``out`` (tests/test_run.py makes one) has 0.2's records and check rows."""
    old_records = by_key(read(FIXTURES / "demo_records.jsonl.gz"), RECORD_KEY)
    new_records = by_key(read(out / "records.jsonl"), RECORD_KEY)
    assert len(new_records) == len(old_records) == 750
    assert differences(old_records, new_records) == []
    old_checks = {k: {f: v for f, v in r.items() if f != "xcnn"}
                  for k, r in by_key(read(FIXTURES / "demo_checks.jsonl.gz"), CHECK_KEY).items()}
    # The check rows' softmax probabilities of perturbed photos sit on float32 convolutions whose last
    # bits follow the CPU's kernels: the same code (0.2's last commit included) gives deletion and
    # insertion probabilities up to 1.5e-6 away from these fixtures on another x86 CPU at 2 threads,
    # while every record stays within 1e-6. 1e-5 still catches any change of method or metric.
    assert differences(old_checks, by_key(read(out / "checks.jsonl"), CHECK_KEY), tol=CHECK_TOL) == []

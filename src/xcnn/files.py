"""File helpers every layer shares: a file name made from data, and a whole-file write.

Standard library only, so the report (run without torch) and the data layer use them too.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# write_atomic's temporary name, ".<name>.tmp<pid>", and the pattern that finds the ones a
# killed process left behind (the run store clears them when it opens a run folder).
TEMP_GLOB = ".*.tmp*"


def slug(text: str) -> str:
    """``text`` as one safe path component: each run of characters other than ASCII letters and
    digits becomes "_". A text with none of them ("猫", "кошка") gets "x_" and 8 hex digits of
    its hash, so two such categories of one photo never share a picture. Records name their
    pictures by path, so a run made before this rule still finds its own."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x_" + hashlib.sha256(text.encode()).hexdigest()[:8]


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a whole file so that readers see the old file or the new, never half of one.
    ``durable`` also survives a power cut (fsync), not only a killed process. A failed write
    (a full disk) leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # next to the target: os.replace cannot cross disks
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

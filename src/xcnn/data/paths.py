"""Confinement of dataset paths: a file named by a dataset must lie inside the dataset's folder."""
from __future__ import annotations

from pathlib import Path

from xcnn.errors import XcnnError


def inside(root: str | Path, relative: object, what: str) -> Path:
    """`root / relative`, or an XcnnError when that path does not resolve inside `root`.

    `relative` comes from a dataset file (a COCO `file_name`, a VOC entry, a folder listing)
    and is not trusted: `../`, an absolute path, or a symlink under `root` that leads out of
    it would let a hostile or careless dataset make xcnn read, write or delete files
    elsewhere. Both sides are resolved, so `root` itself may be a symlink (common for data on
    clusters) while a link inside it may not point out. `what` names the record for the
    message, e.g. "image 42 of /data/instances.json".

    Returns the unresolved path under the absolute `root`, so names stay those the user gave.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise XcnnError(f"{what}: file name {relative!r} is not a path; give a file name relative to {root}")
    if "\x00" in relative:  # no file system takes it, and os calls raise ValueError on it
        raise XcnnError(f"{what}: file name {relative!r} holds a NUL character; fix the file name")
    base = Path(root).absolute()
    path = base / relative
    try:
        real_base, real_path = base.resolve(), path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop (RuntimeError before Python 3.13)
        raise XcnnError(f"{what}: cannot resolve {path} ({err}); fix the file or the links under {base}") from None
    if real_path == real_base or not real_path.is_relative_to(real_base):
        raise XcnnError(
            f"{what}: file name {relative!r} leads outside {base} (to {real_path}); dataset files must lie "
            "inside their folder: fix the file name or move the file into the folder"
        )
    return path

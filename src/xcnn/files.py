"""File helpers every layer shares: a file name made from data, and a whole-file write.

Standard library only, so the report (run without torch) and the data layer use them too.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection
from pathlib import Path

# write_atomic's temporary name, ".<name>.tmp<pid>": the run store clears the ones a killed
# process left behind, and only those (a user's ".notes.tmpl" is not one).
_TEMP_NAME = re.compile(r"\.(.+)\.tmp[0-9]+")


def temporary_for(name: str) -> str | None:
    """The file name a write_atomic temporary named ``name`` stood for, or None if it is not one."""
    match = _TEMP_NAME.fullmatch(name)
    return match.group(1) if match else None


# A name made from data is kept as it is only when it is already a safe, short, lowercase name
# (COCO ids, VOC ids, model names, "dog"): lowercase, so two names never meet on a disk that
# ignores case. Any other gets a cleaned, cut form, "-" and 8 hex digits of the exact text's
# hash; "-" occurs in no kept name, so a hashed name never equals a kept one.
_KEPT = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_ID = re.compile(r"[a-z0-9]+")  # an id that unit_stem keeps: no "_", so the category starts at the first "_"
_WORDS = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")  # a category that unit_stem keeps, " " written "_"
NAME_MAX = 100  # characters of a slug or stem: with "_integrated_gradients.jpg" and write_atomic's
# temporary ".<name>.tmp<pid>" a file name stays under 150 bytes, far from the disks' 255


def _hashed(text: str, key: str) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:NAME_MAX - 9].rstrip("_") or "x"
    # surrogatepass: a file name undecodable as UTF-8 reaches here with lone surrogates
    return f"{base}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def slug(text: str) -> str:
    """``text`` as one safe path component of at most NAME_MAX ASCII characters, different for
    different texts (also where case is ignored): "dog", "42" and "2007_000032" as they are;
    "a b.png" as "a_b_png-" and 8 hex digits of its hash, so "a_b.png" gets another name. Records
    name their pictures by path, so a run made under an older rule still finds its own."""
    return text if len(text) <= NAME_MAX and _KEPT.fullmatch(text) else _hashed(text, text)


def unit_stem(image_id: str, category: str, suffixes: Collection[str] = ()) -> str:
    """The stem of one (photo, category) unit's file names, different for different units:
    "42_dining_table" where that reads back one way only (an id without "_", a category of
    lowercase words), else the hashed form of slug. ``suffixes`` are the names that follow the
    stem after "_" (the methods of the map pictures): a category ending in words that, glued to
    one suffix, spell another ("x guided" + "gradcam" = "x" + "guided_gradcam") is hashed too."""
    joined = f"{image_id}_{category.replace(' ', '_')}"
    glued = any(long != short and long.endswith("_" + short) and joined.endswith("_" + long[:-len(short) - 1])
                for long in suffixes for short in suffixes)
    if len(joined) <= NAME_MAX and _ID.fullmatch(image_id) and _WORDS.fullmatch(category) and not glued:
        return joined
    return _hashed(joined, json.dumps([image_id, category]))


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

"""Fetching a COCO subset: the annotation archive once, then only the selected images.

Every file is downloaded to `<name>.part` and moved into place with os.replace once it is
complete (length matches Content-Length) and checked (a zip opens and its member passes its
CRC, an image decodes at its annotated size), so a killed run never leaves a half file under
the final name. A `.part` left behind is resumed with an HTTP Range request; a server that
ignores Range answers 200 and the file restarts from zero. A server that sends no length
cannot show a cut-short file, so one that fails its check is fetched again from zero.
Files already present and valid are not fetched again; a damaged copy (a zip or an image
with its data cut short) is replaced once a good one has arrived. A file of another kind
at the target (someone's notes named 000042.jpg, a folder) is reported and left alone:
the downloader removes nothing it did not write, and every path it writes comes from the
dataset through `inside` (xcnn.data.paths), so it never writes outside --root.

Only network errors are retried; a local I/O error (disk full, permissions) stops at once.
A web page answered in place of a file (a proxy's login page, a wrong address) is named as such.

Spare candidates: selection walks each category's images in the seeded order and takes the
first `per_category` usable ones. Downloading hooks into that same walk (the `prepare`
argument of `CocoDataset.select`): an image is fetched only when the walk reaches it, and one
that cannot be used (corrupt on the server, wrong size) is skipped like any unusable image,
so the next candidate in the order serves as the spare. Running `select` later on the
downloaded folder with the same seed therefore picks exactly the same images. Unusable
downloads are not kept, so a rerun tries them again when its walk reaches them.
A 404 stops the run: on a COCO server it means a wrong base URL or split, not a lost image.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from xcnn.data.coco import CocoDataset, check_selection
from xcnn.data.download_checks import (BASE_URL_ENV, OFFICIAL_BASE_URL, Check, InTheWay, _local_error, _local_io,
                                       base_url, check_image, check_zip)
from xcnn.data.paths import inside
from xcnn.errors import XcnnError
from xcnn.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["ATTEMPTS", "BASE_URL_ENV", "OFFICIAL_BASE_URL", "Check", "InTheWay", "Selection", "base_url", "check_image",
           "check_zip", "download_coco", "fetch", "fetch_annotations"]

SELECTION_FILE = "xcnn-selection.json"
UNUSABLE = "download unusable (corrupt or wrong size)"  # skip reasons in the selection
IN_THE_WAY = "another file in the way (left alone)"
ATTEMPTS = 4  # tries per file, each resuming where the previous one stopped
RETRY_WAIT_S = 1.0  # doubled after every failed try
MAX_BAD_IMAGES = 20  # unusable downloads per category before we suspect the server
CHUNK = 1 << 16

# How one request ended: the whole file by its Content-Length, short of it, or the
# connection simply closed with no length to compare with.
Got = Literal["whole", "short", "unknown"]

# What a dropped, refused or timed-out connection raises; local file errors are turned into
# XcnnErrors before they get here (see _local_io), so these are worth retrying.
_NETWORK = (urllib.error.URLError, http.client.HTTPException, OSError)


def fetch(url: str, dest: Path, check: Check | None = None, *, progress: bool = False, timeout: float = 60) -> str | None:
    """Make `dest` a complete, checked copy of `url`; returns None, or why the file is unusable.

    An unusable file (its check failed after a complete download) is not kept, and a file
    already at `dest` is replaced only once a good copy has arrived, and only when it is a
    damaged copy of the same kind: anything else there raises InTheWay and is left alone.
    HTTP errors such as 404, a web page instead of the file and local I/O errors are
    XcnnErrors naming the URL or the file; a dropped connection is resumed, at most ATTEMPTS
    tries in all.
    """
    dest = Path(dest)
    if dest.is_file():
        problem = check(dest) if check is not None else None
        if check is None or problem is None:
            return None
        if not check.recognises(dest):
            raise InTheWay(
                f"{dest} is there already and is not a {check.kind} ({problem}); "
                "xcnn leaves files it did not write alone: move it away and run again"
            )
        log.warning("%s is damaged (%s); fetching it again", dest, problem)
    elif dest.exists() or dest.is_symlink():
        raise InTheWay(f"{dest} is there already and is not a file; move it away and run again")
    with _local_io(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_WAIT_S * 2 ** (attempt - 1))
        try:
            got = _get(url, part, progress, timeout)
        except urllib.error.HTTPError as err:
            raise XcnnError(
                f"{url}: HTTP {err.code} {err.reason}; check the address (--base-url or ${BASE_URL_ENV}) and the split"
            ) from None
        except _NETWORK as err:
            last_error = str(getattr(err, "reason", err)) or type(err).__name__
            log.warning("%s: %s (try %d of %d)", url, last_error, attempt + 1, ATTEMPTS)
            continue
        if got == "short":
            last_error = "connection closed before the end of the file"
            log.warning("%s: %s (try %d of %d)", url, last_error, attempt + 1, ATTEMPTS)
            continue
        problem = check(part) if check else None
        with _local_io(part):
            if problem is None:
                # not write_atomic: the .part is streamed and kept across a kill, to be resumed
                os.replace(part, dest)
                return None
            part.unlink()
        if got == "whole" or attempt == ATTEMPTS - 1:  # whole (or as good as we can get): the file itself is bad
            log.warning("%s: downloaded file is unusable (%s); not kept", url, problem)
            return problem
        last_error = f"damaged ({problem}), maybe cut short: the server sent no length"
        log.warning("%s: %s (try %d of %d)", url, last_error, attempt + 1, ATTEMPTS)
    raise XcnnError(f"{url}: download failed {ATTEMPTS} times ({last_error}); run again later to resume")


def _get(url: str, part: Path, progress: bool, timeout: float) -> Got:
    """One request appending to `part`."""
    with _local_io(part):
        have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our .part is not a prefix the server recognises: start over
            with _local_io(part):
                part.unlink()
            return "short"
        raise
    with response:
        start = 0
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
            if start != have:  # a range we did not ask for: start over
                with _local_io(part):
                    part.unlink(missing_ok=True)
                return "short"
        length = response.headers.get("Content-Length", "")
        total = start + int(length) if length.isdigit() else None
        chunk = response.read(CHUNK)
        if response.headers.get_content_type() == "text/html" or (not start and _is_web_page(chunk)):
            raise XcnnError(
                f"{url}: the server returned a web page, not the file; check the address "
                f"(--base-url or ${BASE_URL_ENV}) and your proxy"
            )
        with _local_io(part):
            out = part.open("ab" if start else "wb")
        with out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5],
            disable=None if progress else True, leave=False,
        ) as bar:
            while chunk:
                with _local_io(part):
                    out.write(chunk)
                bar.update(len(chunk))
                chunk = response.read(CHUNK)
            with _local_io(part):
                out.flush()
    with _local_io(part):
        size = part.stat().st_size
        if total is None:
            return "unknown"
        if size == total:
            return "whole"
        if size > total:  # more than announced: the .part cannot be trusted
            part.unlink()
    return "short"


def _is_web_page(head: bytes) -> bool:
    # Servers and proxies send their error and login pages with status 200 all too often.
    return head.lstrip()[:9].lower().startswith((b"<!doctype", b"<html"))


def fetch_annotations(root: Path, split: str, server: str | None = None) -> Path:
    """`root/annotations/instances_{split}.json`, fetched (archive once) and extracted if absent.

    The archive (`annotations_trainval{year}.zip`, kept in `root` for the other split) is
    fetched from `server`/annotations/ only when the JSON is not there yet, or is damaged.
    """
    year = _split_year(split)
    member = f"annotations/instances_{split}.json"
    target = inside(root, member, f"split {split!r}")
    archive = root / f"annotations_trainval{year}.zip"
    if target.is_file() and _usable(target, archive, member):
        return target
    url = f"{base_url(server)}/annotations/{archive.name}"
    problem = fetch(url, archive, check_zip(member), progress=True)
    if problem is not None:
        raise XcnnError(f"{url}: {problem}")
    _extract(archive, member, target)
    return target


def _split_year(split: str) -> str:
    # The split names a folder under --root and a file in the archive: letters, digits, '_'
    # and '-' only, so it can lead nowhere else.
    match = re.fullmatch(r"[A-Za-z0-9_-]*?(\d{4})", split)
    if match is None:
        raise XcnnError(f"split {split!r} should be a name ending in a year, e.g. train2017 or val2017")
    return match.group(1)


def _usable(target: Path, archive: Path, member: str) -> bool:
    """Whether an extracted annotation file can be used as it is.

    A whole copy of the archive's member is (same size and CRC-32: cheaper than parsing
    the 450 MB of train2017), and so is any valid JSON (someone's own edit, or the archive
    was deleted). One that does not parse is a damaged extraction, e.g. from a crash before
    it reached the disk, and is extracted again: rerunning would otherwise fail the same way.
    """
    with _local_io(target):
        if archive.is_file() and _same_as_member(target, archive, member):
            return True
        try:
            with target.open("rb") as f:
                json.load(f)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, nested too deep
            log.warning("%s is damaged (%s); extracting it again", target, err)
            return False
    return True


def _same_as_member(path: Path, archive: Path, member: str) -> bool:
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
    except (zipfile.BadZipFile, KeyError):
        return False
    if path.stat().st_size != info.file_size:
        return False
    crc = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def _extract(archive: Path, member: str, target: Path) -> None:
    # Streamed through a .part, not write_atomic (whole bytes): the annotations are hundreds of MB.
    tmp = target.with_name(target.name + ".part")
    log.info("extracting %s from %s", member, archive)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())  # whole on disk before it takes the final name
        os.replace(tmp, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # changed since it was checked
        tmp.unlink(missing_ok=True)
        raise XcnnError(f"{archive} is damaged ({err}); delete it and run again to download it anew") from None
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _local_error(tmp, err) from None


@dataclass(frozen=True)
class Selection:
    """Which images to fetch, as `Dataset.select` picks them: the first `per_category` usable
    ones of each category in the order of `seed`, objects of at least `min_area` of the image,
    photos of at most `max_pixels`. Checked when made, before anything is downloaded."""

    per_category: int
    seed: int = 0
    min_area: float = 0.01
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        check_selection(self.per_category, self.seed, self.min_area, self.max_pixels)


def download_coco(root: str | Path, split: str, categories: Sequence[str], wanted: Selection,
                  url: str | None = None) -> Path:
    """Fetch the annotations and the seeded selection of images; returns the selection file.

    Layout: root/annotations/instances_{split}.json, root/{split}/{file_name},
    root/xcnn-selection.json (chosen image ids per category, with the selection settings).
    Every argument is checked before anything is downloaded.
    """
    _split_year(split)
    if not any(c.strip() for c in categories):
        raise XcnnError("no category given; name at least one, e.g. 'zebra'")
    root = Path(root)
    server = base_url(url)
    ann_file = fetch_annotations(root, split, server)
    dataset = CocoDataset(ann_file, root / split)
    names = [dataset.category(c)["name"] for c in categories if c.strip()]
    images = _Images(server, split, wanted.max_pixels, len(names),
                     tqdm(total=wanted.per_category * len(set(names)), unit="img", desc=f"{split} images", disable=None))
    with images.bar:
        samples, skipped = dataset.select(names, wanted.per_category, wanted.seed, wanted.min_area, prepare=images,
                                          max_pixels=wanted.max_pixels)
    chosen: dict[str, list[int | str]] = {name: [] for name in dict.fromkeys(names)}
    for sample in samples:
        chosen[sample.category].append(sample.image_id)
    selection = {
        "split": split, "seed": wanted.seed, "per_category": wanted.per_category, "min_area": wanted.min_area,
        "max_pixels": wanted.max_pixels, "annotations": str(ann_file.relative_to(root)), "image_dir": split,
        "images": chosen, "skipped": skipped,
    }
    out = root / SELECTION_FILE
    with _local_io(out):
        write_atomic(out, (json.dumps(selection, indent=1) + "\n").encode())
    log.info(
        "%s: %s; images downloaded %d, already present %d; skipped %s; selection in %s",
        split, ", ".join(f"{n} {len(ids)}" for n, ids in chosen.items()),
        images.fetched["downloaded"], images.fetched["already present"], skipped or "none", out,
    )
    return out


@dataclass
class _Images:
    """The `prepare` hook of the selection's walk: fetches each image the walk reaches and
    counts them; too many unusable ones mean the server is not a COCO image server."""

    server: str
    split: str
    max_pixels: int | None
    categories: int  # as named, so a category named twice allows twice the unusable images
    bar: Any  # tqdm
    fetched: Counter[str] = field(default_factory=Counter)

    def __call__(self, file: Path, info: dict[str, Any]) -> str | None:
        present = file.is_file()
        url = f"{self.server}/{self.split}/{urllib.parse.quote(info['file_name'])}"
        try:
            problem = fetch(url, file, check_image((info["height"], info["width"]), self.max_pixels))
        except InTheWay as err:
            log.warning("skipping image %d: %s", info["id"], err)
            return IN_THE_WAY
        if problem is not None:
            self.fetched["unusable"] += 1
            if self.fetched["unusable"] > MAX_BAD_IMAGES * self.categories:
                raise XcnnError(f"{self.fetched['unusable']} downloaded images were unusable; is {self.server} "
                                "a COCO image server?")
            return UNUSABLE
        self.fetched["already present" if present else "downloaded"] += 1
        self.bar.update(1)
        return None

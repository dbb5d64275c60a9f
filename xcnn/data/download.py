"""Fetching a COCO subset: the annotation archive once, then only the selected images.

Every file is downloaded to `<name>.part` and moved into place with os.replace once it is
complete (length matches Content-Length) and checked (a zip opens and holds its member,
an image decodes at its annotated size), so a killed run never leaves a half file under
the final name. A `.part` left behind is resumed with an HTTP Range request; a server that
ignores Range answers 200 and the file restarts from zero. Files already present and valid
are not fetched again; a damaged one (e.g. truncated) is fetched again.

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
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from xcnn.data.coco import CocoDataset
from xcnn.data.images import load_image
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "http://images.cocodataset.org"
BASE_URL_ENV = "XCNN_COCO_BASE_URL"
SELECTION_FILE = "xcnn-selection.json"
UNUSABLE = "download unusable (corrupt or wrong size)"  # skip reason in the selection
ATTEMPTS = 4  # tries per file, each resuming where the previous one stopped
RETRY_WAIT_S = 1.0  # doubled after every failed try
MAX_BAD_IMAGES = 20  # unusable downloads per category before we suspect the server
CHUNK = 1 << 16

Check = Callable[[Path], "str | None"]  # returns what is wrong with a file, or None


def base_url(value: str | None = None) -> str:
    """The server root: `value`, else $XCNN_COCO_BASE_URL, else the official COCO server."""
    return (value or os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL).rstrip("/")


def fetch(url: str, dest: Path, check: Check | None = None, *, progress: bool = False, timeout: float = 60) -> str | None:
    """Make `dest` a complete, checked copy of `url`; returns None, or why the file is unusable.

    An unusable file (its check failed after a complete download) is not kept. HTTP errors
    such as 404 are XcnnErrors naming the URL; a dropped connection is resumed, at most
    ATTEMPTS tries in all.
    """
    dest = Path(dest)
    if dest.is_file():
        problem = check(dest) if check else None
        if problem is None:
            return None
        log.warning("%s is damaged (%s); fetching it again", dest, problem)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_WAIT_S * 2 ** (attempt - 1))
        try:
            if _get(url, part, progress, timeout):
                break
            last_error = "connection closed before the end of the file"
        except urllib.error.HTTPError as err:
            raise XcnnError(
                f"{url}: HTTP {err.code} {err.reason}; check the address (--base-url or ${BASE_URL_ENV}) and the split"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last_error = str(getattr(err, "reason", err)) or type(err).__name__
        log.warning("%s: %s (try %d of %d)", url, last_error, attempt + 1, ATTEMPTS)
    else:
        raise XcnnError(f"{url}: download failed {ATTEMPTS} times ({last_error}); run again later to resume")
    problem = check(part) if check else None
    if problem is not None:
        log.warning("%s: downloaded file is unusable (%s); not kept", url, problem)
        part.unlink()
        return problem
    os.replace(part, dest)
    return None


def _get(url: str, part: Path, progress: bool, timeout: float) -> bool:
    """One request appending to `part`; True when `part` now holds the whole file."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our .part is not a prefix the server recognises: start over
            part.unlink()
            return False
        raise
    with response:
        start = 0
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
            if start != have:  # a range we did not ask for: start over
                part.unlink(missing_ok=True)
                return False
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with part.open("ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5],
            disable=None if progress else True, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is None or size == total:
        return True
    if size > total:  # more than announced: the .part cannot be trusted
        part.unlink()
    return False


def check_image(size: tuple[int, int] | None = None) -> Check:
    """A check that the file decodes as an image (of `size` = (h, w) if given)."""

    def check(path: Path) -> str | None:
        try:
            load_image(path, size)
        except XcnnError as err:
            return str(err)
        return None

    return check


def check_zip(member: str) -> Check:
    """A check that the file is a zip archive holding `member`."""

    def check(path: Path) -> str | None:
        try:
            with zipfile.ZipFile(path) as archive:
                if member not in archive.namelist():
                    return f"the archive has no {member}"
        except (zipfile.BadZipFile, OSError) as err:
            return f"not a valid zip archive ({err})"
        return None

    return check


def annotations(root: Path, split: str, server: str | None = None) -> Path:
    """`root/annotations/instances_{split}.json`, fetched (archive once) and extracted if absent.

    The archive (`annotations_trainval{year}.zip`, kept in `root` for the other split) is
    fetched from `server`/annotations/ only when the JSON is not there yet.
    """
    member = f"annotations/instances_{split}.json"
    target = root / member
    if target.is_file():
        return target
    year = re.search(r"(\d{4})$", split)
    if year is None:
        raise XcnnError(f"split {split!r} should end in a year, e.g. train2017 or val2017")
    archive_name = f"annotations_trainval{year.group(1)}.zip"
    archive = root / archive_name
    problem = fetch(f"{base_url(server)}/annotations/{archive_name}", archive, check_zip(member), progress=True)
    if problem is not None:
        raise XcnnError(f"{archive}: {problem}; the archive does not hold split {split!r}, check --split")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    log.info("extracting %s from %s", member, archive)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError) as err:  # a CRC error surfaces only on reading
        tmp.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise XcnnError(f"{archive} is damaged ({err}); it was removed, run again to download it anew") from None
    os.replace(tmp, target)
    return target


def download_coco(
    root: str | Path,
    split: str,
    categories: Sequence[str],
    per_category: int,
    seed: int = 0,
    min_area: float = 0.01,
    url: str | None = None,
) -> Path:
    """Fetch the annotations and the seeded selection of images; returns the selection file.

    Layout: root/annotations/instances_{split}.json, root/{split}/{file_name},
    root/xcnn-selection.json (chosen image ids per category, with the selection settings).
    """
    root = Path(root)
    server = base_url(url)
    ann_file = annotations(root, split, server)
    dataset = CocoDataset(ann_file, root / split)
    names = [dataset.category(c)["name"] for c in categories]
    fetched: Counter[str] = Counter()
    bar = tqdm(total=per_category * len(set(names)), unit="img", desc=f"{split} images", disable=None)

    def prepare(file: Path, info: dict) -> str | None:
        present = file.is_file()
        problem = fetch(f"{server}/{split}/{info['file_name']}", file, check_image((info["height"], info["width"])))
        if problem is not None:
            fetched["unusable"] += 1
            if fetched["unusable"] > MAX_BAD_IMAGES * len(names):
                raise XcnnError(f"{fetched['unusable']} downloaded images were unusable; is {server} a COCO image server?")
            return UNUSABLE
        fetched["already present" if present else "downloaded"] += 1
        bar.update(1)
        return None

    with bar:
        samples, skipped = dataset.select(names, per_category, seed, min_area, prepare=prepare)
    chosen: dict[str, list[int]] = {name: [] for name in dict.fromkeys(names)}
    for sample in samples:
        chosen[sample.category].append(sample.image_id)
    selection = {
        "split": split, "seed": seed, "per_category": per_category, "min_area": min_area,
        "annotations": str(ann_file.relative_to(root)), "image_dir": split,
        "images": chosen, "skipped": skipped,
    }
    out = root / SELECTION_FILE
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(selection, indent=1) + "\n")
    os.replace(tmp, out)
    log.info(
        "%s: %s; images downloaded %d, already present %d; skipped %s; selection in %s",
        split, ", ".join(f"{n} {len(ids)}" for n, ids in chosen.items()),
        fetched["downloaded"], fetched["already present"], skipped or "none", out,
    )
    return out

"""What a downloaded file must be, and where the files come from: the checks a fetched file
passes before it takes its name (an image decodes at its size, a zip's member passes its CRC),
the server's address, and the one-line errors of local file operations.

A file of another kind at the target (someone's notes named 000042.jpg, a folder) is reported
(``InTheWay``) and left alone: the downloader removes nothing it did not write.
"""
from __future__ import annotations

import os
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xcnn.data.images import is_image, load_image
from xcnn.errors import XcnnError

OFFICIAL_BASE_URL = "http://images.cocodataset.org"
BASE_URL_ENV = "XCNN_COCO_BASE_URL"


@dataclass(frozen=True)
class Check:
    """What a fetched file must be: `check(path)` says what is wrong with it, or None."""

    kind: str  # for messages: "image", "zip archive"
    problem: Callable[[Path], str | None]
    recognises: Callable[[Path], bool]  # a file already there is a (maybe damaged) copy of this kind

    def __call__(self, path: Path) -> str | None:
        return self.problem(path)


class InTheWay(XcnnError):
    """A file that is not of the kind expected already holds the target's name: it is left alone."""


def base_url(value: str | None = None) -> str:
    """The server root: `value`, else $XCNN_COCO_BASE_URL, else the official COCO server.

    A malformed address is refused at once: every try at it would fail the same way, and
    retrying would end in "run again later".
    """
    env = os.environ.get(BASE_URL_ENV)
    given, where = (value, "--base-url") if value else (env, f"${BASE_URL_ENV}") if env else (OFFICIAL_BASE_URL, "")
    problem = _url_problem(given)
    if problem is not None:
        raise XcnnError(f"{where} {given!r} is not a server address ({problem}); give one like "
                        f"{OFFICIAL_BASE_URL} or file:///path/to/a/copy")
    return given.rstrip("/")


def _url_problem(url: str) -> str | None:
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds a space or a control character"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsed on access; a port that is not a number raises here
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https", "file"):
        return f"the scheme must be http, https or file, not {parts.scheme!r}" if parts.scheme else "no http:// or https://"
    if parts.scheme != "file" and not parts.hostname:
        return "no host name"
    if parts.scheme == "file" and not parts.path.strip("/"):
        return "no path"
    return None


@contextmanager
def _local_io(path: Path) -> Iterator[None]:
    """Names an OSError of a local file operation as what it is: retrying the download won't help."""
    try:
        yield
    except OSError as err:
        raise _local_error(path, err) from None


def _local_error(path: Path, err: OSError) -> XcnnError:
    return XcnnError(
        f"local I/O error on {path} ({err.strerror or err}), not a network one; "
        "free disk space or fix the permissions, then run again"
    )


def check_image(size: tuple[int, int] | None = None, max_pixels: int | None = None) -> Check:
    """A check that the file decodes as an image (of `size` = (h, w) if given, within `max_pixels`)."""

    def problem(path: Path) -> str | None:
        try:
            # As stored (no EXIF turn): `size` and the masks are those of the stored pixels.
            load_image(path, size, max_pixels=max_pixels)
        except XcnnError as err:
            return str(err)
        return None

    return Check("image", problem, is_image)


def check_zip(member: str) -> Check:
    """A check that the file is a zip archive holding `member` whole (its CRC is verified)."""
    at_fault = f"the file on the server or something on the way (a proxy) is at fault: check --base-url or ${BASE_URL_ENV}"

    def problem(path: Path) -> str | None:
        try:
            with zipfile.ZipFile(path) as archive:
                if member not in archive.namelist():
                    return f"the archive has no {member}; check --split"
                with archive.open(member) as data:  # reading to the end checks the CRC
                    while data.read(1 << 20):
                        pass
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            return f"the archive is damaged ({err}); {at_fault}"
        except OSError as err:
            raise _local_error(path, err) from None
        return None

    def recognises(path: Path) -> bool:
        with _local_io(path), path.open("rb") as f:
            return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")

    return Check("zip archive", problem, recognises)

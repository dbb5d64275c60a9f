"""The one exception type the CLI turns into a one-line message (no traceback), and its hint."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class XcnnError(Exception):
    """A user-facing error: its message names the file or value at fault and what to do."""


def did_you_mean(name: str, options: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """"did you mean 'a', 'b'?" for the (at most n) options closest to `name`, "" when none is close.

    Compared case-insensitively (a class or category typed in another case is still the same
    word), suggested in the options' own spelling.
    """
    spelling = {str(o).casefold(): str(o) for o in options}
    close = difflib.get_close_matches(str(name).casefold(), list(spelling), n=n, cutoff=cutoff)
    return f"did you mean {', '.join(repr(spelling[c]) for c in close)}?" if close else ""

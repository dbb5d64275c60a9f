"""The one exception type the CLI turns into a one-line message (no traceback)."""


class XcnnError(Exception):
    """A user-facing error: its message names the file or value at fault and what to do."""

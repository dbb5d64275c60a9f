"""RUN_DIR/.lock as readers see it: which process, if any, is writing the run. The writer
(``xcnn.experiment.store.RunLock``) holds an exclusive ``flock`` for the run's whole life and
writes ``holder_text()`` into the file, which is how the lock names its holder."""
from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from xcnn.runfolder.layout import LOCK_FILE


def holder_text() -> str:
    """What the writer writes into the lock file: this process, by pid and host."""
    return f"xcnn run (pid {os.getpid()} on {socket.gethostname()})\n"


def lock_holder(run_dir: Path) -> str | None:
    """Who holds RUN_DIR/.lock when another process does (as the lock file names it), else None.

    A shared, non-blocking flock taken and dropped at once: it never waits, and a writer is
    refused only if it starts in that instant. This process's own run is not another process."""
    import fcntl

    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None  # no lock file: no run ever held it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                return None
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            if f"pid {os.getpid()} on {socket.gethostname()})" in holder:
                return None  # `xcnn run` writing its own report while it holds the lock
            return holder or "another process"
        return None
    finally:
        os.close(fd)  # drops the probe's lock, if it got one

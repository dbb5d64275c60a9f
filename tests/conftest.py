"""Fixtures several test modules share."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for the module: runs compared with each other (here, in subprocesses, on
    one-CPU Ray actors) give identical numbers, and the suite does not oversubscribe the machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Progress inside one call: the passes a long loop has done of those it planned.

The multi-pass methods (Score-CAM, Integrated Gradients, SmoothGrad) and the model checks run
the model hundreds of times in one call, which a progress bar counting whole batches shows as
minutes of nothing. Whoever shows progress (the run's bar, `xcnn explain`) sets a reporter for
the block:

    with passes.reporting(lambda label, done, planned: print(label, done, planned)):
        explainer.explain(images, methods=["scorecam"])

and each such loop counts its work with a ``Tally``: ``Tally("scorecam passes", planned)``
reports ``done = 0`` when made, then ``add(n)`` after each chunk reports the running total, so
a loop's last report has ``done == planned``. A pass is one input through the model (forward,
and backward where the method needs it). Loops may nest (randomisation steps, each explaining
with SmoothGrad); each reports under its own label.

Without a reporter a tally costs one test per chunk: the maps are the same bit for bit and a
single-pass method never makes one. The reporter is a ContextVar, so it belongs to the thread
that set it: a Ray actor, in another process, has none and reports nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Reporter = Callable[[str, int, int], None]  # (label, done, planned)

_REPORTER: ContextVar[Reporter | None] = ContextVar("xcnn_passes_reporter", default=None)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send every tally made in the block to ``reporter`` (None: to nobody)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


class Tally:
    """The passes of one loop, told to the reporter of the block it was made in."""

    __slots__ = ("label", "planned", "done", "_report")

    def __init__(self, label: str, planned: int) -> None:
        self.label = label
        self.planned = int(planned)
        self.done = 0
        self._report = _REPORTER.get()
        if self._report is not None:
            self._report(label, 0, self.planned)

    def add(self, n: int = 1) -> None:
        if self._report is not None:
            self.done += int(n)
            self._report(self.label, self.done, self.planned)

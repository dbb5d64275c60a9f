"""The run's progress: the tally of a run (``Summary``), the bar every backend reports to
(``Progress``) and the bar of the loops inside one batch or engine call (``PassBar``).

Its own module so that the runner and the backends both import it and not each other.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xcnn.experiment.plan import Batch
    from xcnn.experiment.store import RunStore
    from xcnn.runfolder.records import UnitKey, UnitResult

log = logging.getLogger(__name__)

DRAW_EVERY = 0.1  # seconds: a bar inside a batch is redrawn at most ~10 times a second
HEARTBEAT = 1.0  # seconds: ... and at least once a second, also while one chunk of passes runs
LOG_EVERY = 30.0  # seconds between two progress lines when stderr is a file, not a terminal


@dataclass
class Summary:
    records: int = 0  # records written by this call
    records_total: int = 0  # records in RUN_DIR/records.jsonl after this call, this config's or not
    check_rows: int = 0  # rows of checks.jsonl written by this call
    units_done_before: int = 0
    units_total: int = 0
    photos: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed units by reason, this call
    filtered: int = 0  # units of this config left out by run.max_target_rank, this call's and earlier ones
    skipped_images: dict[str, int] = field(default_factory=dict)  # dataset selection, by reason
    seconds: float = 0.0
    workers: dict[str, float] = field(default_factory=dict)  # worker -> units per second (Ray)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def live_terminal() -> bool:
    """Whether stderr is a terminal: bars are redrawn in place there; in a file (a redirected
    or nohup'd run) a bar's carriage returns would break the log lines, so lines replace it."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """The progress bar and tally every backend reports to: units, counted once each, and the
    passes inside the running batch (``PassBar``) of a worker in this process (a Ray worker's
    are not seen: only its units move the bar). A bar on a terminal; on a file, a progress line
    at most every LOG_EVERY seconds."""

    def __init__(self, summary: Summary, todo: set[UnitKey], live: bool | None = None) -> None:
        self.summary = summary
        self.todo = set(todo)  # units not done when the run started
        self.live = live_terminal() if live is None else live
        self._done = summary.units_done_before
        self._bar: Any = None
        self._hooks: list[Any] = []

    def __enter__(self) -> Progress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        from xcnn.methods.passes import reporting

        if self.live:  # log lines above the bars; to a file they go as they are
            self._hooks.append(logging_redirect_tqdm())
        self._bar = tqdm(total=self.summary.units_total, initial=self.summary.units_done_before, unit="unit",
                         desc="xcnn run", dynamic_ncols=True, disable=not self.live)
        self._passes = PassBar(self.live, head=lambda: f"{self._done}/{self.summary.units_total} units",
                               outer=self._bar)
        self._hooks.append(reporting(self.passes))
        for hook in self._hooks:
            hook.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._passes.close()
        self._bar.close()
        for hook in reversed(self._hooks):
            hook.__exit__(*exc)

    def passes(self, label: str, done: int, planned: int) -> None:
        """The reporter of xcnn.methods.passes: a loop inside the running batch moved."""
        self._passes(label, done, planned)

    def store(self, store: RunStore, batch: Batch, results: Sequence[UnitResult]) -> None:
        """Hand one batch's results to the store, count them, and log the units as ended."""
        for r in results:
            self.summary.records += store.add(r)
            if r.failure is not None and r.key in self.todo:
                log.warning("%s %s photo %s (%s): %s", *r.key[:3], r.key[3], r.failure)
                self.summary.failures[r.failure.split(":")[0]] += 1
        store.mark(batch.keys(), "end")
        new = self.todo.intersection(batch.keys())
        self.todo -= new
        self._done += len(new)
        self._passes.clear()  # the batch is over, also a loop an error cut short
        self._bar.update(len(new))
        self._passes.tick()


class PassBar:
    """The loops running inside a batch or an engine call (xcnn.methods.passes): "label done/planned".

    On a terminal: a bar under any other (``leave=False``: gone when the loops are), the innermost
    loop's passes as the bar, the loops around it in its description ("randomisation steps 2/5,
    smoothgrad passes"), redrawn at most every DRAW_EVERY seconds, and every HEARTBEAT seconds by
    a thread of its own (started by the first report): a chunk of passes can take longer than
    that (on 2 CPU cores, one of Score-CAM's ~270 forwards at 224 px takes ~20 s), and its clock
    keeps moving meanwhile. In a file: an INFO line every LOG_EVERY seconds, after ``head()``
    (what the caller counts, e.g. the run's units), also while one chunk runs.

    Called as the reporter: ``with passes.reporting(PassBar(live)): ...``, then ``close()``.
    ``outer``: the bar above it (the run's units), whose clock the heartbeat keeps moving too."""

    def __init__(self, live: bool, head: Callable[[], str] | None = None, outer: Any = None) -> None:
        self.live = live
        self._head = head
        self._outer = outer
        # label -> (done, planned, time.time() it began), outermost first
        self._loops: dict[str, tuple[int, int, float]] = {}
        self._bar: Any = None
        self._showing: tuple[str, float] | None = None  # the loop the bar counts: (label, began)
        self._drawn = 0.0
        self._logged = time.monotonic()
        self._lock = threading.Lock()  # the loops and the bar, between the caller and the heartbeat
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __call__(self, label: str, done: int, planned: int) -> None:
        with self._lock:
            if done == 0:
                self._loops.pop(label, None)  # started (again): now the innermost
            if done < planned:
                self._loops[label] = (done, planned, self._loops.get(label, (0, 0, time.time()))[2])
            else:
                self._loops.pop(label, None)
            if self.live and time.monotonic() - self._drawn >= DRAW_EVERY:
                self._draw()
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, name="xcnn-progress", daemon=True)
                self._beat.start()
        self.tick()

    def tick(self) -> None:
        """In a file: the progress line, when LOG_EVERY seconds passed since the last one."""
        with self._lock:
            now = time.monotonic()
            if self.live or now - self._logged < LOG_EVERY:
                return
            self._logged = now
            parts = [self._head()] if self._head is not None else []
            parts += [f"{label} {done}/{planned}" for label, (done, planned, _) in self._loops.items()]
        if parts:
            log.info("progress: %s", "; ".join(parts))

    def clear(self) -> None:
        """Forget every loop (the batch is over, or an error cut one short) and take the bar away."""
        with self._lock:
            self._loops.clear()
            self._close_bar()

    def close(self) -> None:
        self.clear()
        self._stop.set()
        if self._beat is not None:
            self._beat.join()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._showing = None

    def _draw(self) -> None:
        """The bar as the loops are now (the lock held)."""
        from tqdm import tqdm

        self._drawn = time.monotonic()
        if not self._loops:
            self._close_bar()
            return
        *outer, (label, (done, planned, began)) = self._loops.items()
        desc = ", ".join([*(f"{lab} {d}/{p}" for lab, (d, p, _) in outer), label])
        unit = _singular(label.rpartition(" ")[2])  # "scorecam passes": pass/s
        if self._bar is None:
            # miniters=1, mininterval=0: every call draws; the calls themselves are throttled
            self._bar = tqdm(total=planned, desc=desc, unit=unit, leave=False, dynamic_ncols=True, miniters=1,
                             mininterval=0)
        elif self._bar.desc != desc:
            self._bar.set_description_str(desc, refresh=False)
        self._bar.unit = unit
        if self._showing != (label, began):  # another loop, or this one begun again
            if self._showing is not None:
                self._bar.reset(total=planned)
            # the clock and the rate from the loop's start, not from a (throttled) first draw
            self._bar.start_t = self._bar.last_print_t = began
            self._showing = (label, began)
        if done != self._bar.n:
            self._bar.update(done - self._bar.n)
        else:
            self._bar.refresh()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            if not self.live:
                self.tick()
                continue
            with self._lock:
                if self._outer is not None:
                    self._outer.refresh()
                if self._loops or self._bar is not None:
                    self._draw()


def _singular(word: str) -> str:
    return word[:-2] if word.endswith("sses") else word[:-1] if word.endswith("s") else word

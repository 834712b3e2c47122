"""Open the trackers ``--log`` names and fan each record out to them, so that no tracker can break or slow a run.

Every tracker call runs on one background thread: the training loop only puts a record on a queue. A tracker
that is missing, or raises at any point, costs one warning line and is dropped; the run, and its own files (the
source of truth), go on unchanged. Tracker run ids are kept in ``<run_dir>/trackers.json`` so that ``--resume``
continues the same tracker runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from distillers.errors import UserError
from distillers.rundir import read_json, write_json_atomic
from distillers.tracking.base import EXTRAS, TRACKERS, Tracker, TrackerContext, one_line, warn

TRACKERS_FILE = "trackers.json"
CLOSE_TIMEOUT_S = 60.0  # how long the end of a run waits for a slow tracker before leaving it behind


def parse_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` (or a sequence) as canonical tracker names; ``none`` alone means no tracker.

    An unknown name is a UserError that lists the valid ones.
    """
    parts = names.split(",") if isinstance(names, str) else list(names)
    parts = [part.strip() for part in parts if part.strip()]
    if parts == ["none"]:
        return ()
    canonical: list[str] = []
    for part in parts:
        try:
            name = TRACKERS.canonical(part)
        except UserError:
            raise UserError(f"unknown tracker {part!r} in --log; choose from: {', '.join(TRACKERS.names())} "
                            f"(comma-separated), or none") from None
        if name not in canonical:
            canonical.append(name)
    return tuple(canonical)


class Trackers:
    """The open trackers of one run, fed from a background thread."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self._trackers = list(trackers)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> list[str]:
        return [tracker.name for tracker in self._trackers]

    def epoch(self, record: dict[str, Any]) -> None:
        """Hand one metrics.jsonl record to every tracker (returns at once)."""
        record = dict(record)
        self._submit(lambda tracker: tracker.log_epoch(record), "logging an epoch")

    def close(self, summary: dict[str, Any], timeout_s: float = CLOSE_TIMEOUT_S) -> list[str]:
        """Send the summary, end every tracker's run with the summary's status, and return their closing notes."""
        if not self._trackers and self._thread is None:
            return []
        status = str(summary.get("status") or "failed")
        self._submit(lambda tracker: tracker.log_summary(summary), "logging the summary")
        self._submit(lambda tracker: tracker.finish(status), "closing its run")
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                warn(f"tracker(s) {', '.join(self.names)} still busy after {timeout_s:.0f}s; their runs may lack "
                     f"the last records (the run directory has them all)")
                return []
        notes = []
        for tracker in self._trackers:
            try:
                note = tracker.closing_note()
            except Exception:  # noqa: BLE001 - a note is a courtesy; its failure changes nothing
                note = None
            if note:
                notes.append(note)
        self._trackers = []
        return notes

    def _submit(self, call: Callable[[Tracker], None], what: str) -> None:
        if not self._trackers:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="distillers-trackers", daemon=True)
            self._thread.start()
        self._queue.put((call, what))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            call, what = item
            for tracker in list(self._trackers):
                try:
                    call(tracker)
                except BaseException as error:  # noqa: BLE001 - no tracker error may reach the run
                    self._drop(tracker, f"{tracker.name} tracker failed while {what} ({one_line(error)})")

    def _drop(self, tracker: Tracker, message: str) -> None:
        self._trackers.remove(tracker)
        warn(f"{message}; the run goes on without it (its own files are complete)")
        with contextlib.suppress(BaseException):  # already reported once
            tracker.finish("failed")


def open_trackers(names: Sequence[str], context: TrackerContext) -> Trackers:
    """Open each named tracker (reopening its earlier run on resume) and record their run ids in trackers.json."""
    path = Path(context.run_dir) / TRACKERS_FILE
    previous = _read_state(path) if context.resumed else {}
    opened: list[Tracker] = []
    for name in names:
        try:
            opened.append(TRACKERS.get(name)(dataclasses.replace(context, previous=previous.get(name, {}))))
        except ImportError as error:
            extra = EXTRAS.get(name)
            hint = f"pip install 'distillers[{extra}]'" if extra else f"pip install {name}"
            warn(f"--log {name}: cannot import {error.name or name} ({hint}); the run goes on without it")
        except Exception as error:  # noqa: BLE001 - a tracker must never stop a run
            warn(f"--log {name}: could not start ({one_line(error)}); the run goes on without it")
    kept = {tracker.name: tracker.state() for tracker in opened if tracker.state()}
    if kept:  # only trackers with a run to continue (TensorBoard alone leaves no trackers.json)
        state = {**previous, **kept}
        try:
            write_json_atomic(path, state)
        except OSError as error:
            warn(f"cannot write {path} ({one_line(error)}); a resumed run will start new tracker runs")
    return Trackers(opened)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = read_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        warn(f"cannot read {path} ({one_line(error)}); starting new tracker runs")
        return {}
    return state if isinstance(state, dict) else {}

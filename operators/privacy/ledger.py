"""The privacy budget ledger: what each stream has spent, written to disk before anything is released.

One append-only JSON-lines file per release target (an operator), one record per spend or release step, each written
and fsynced *before* the release it pays for (write ahead): a crash or ``kill -9`` at any point leaves a ledger that
has counted everything that may have been released, so a restarted pipeline resumes the spent budget and never spends
it twice. Records:

* ``{"stream": key, "spend": rho, "epoch": e, "why": ...}``: a charge against the stream's budget (an epoch of a
  counter, or the replay of releases after a restart from an older snapshot, whose fresh noise costs again);
* ``{"stream": key, "epoch": e, "step": t}``: release step t of epoch e is about to go out.

Processes that share the file lock it (``fcntl.flock``) for each check-and-append and read the records others added.

>>> import tempfile
>>> ledger = BudgetLedger(tempfile.mkdtemp(), "counts", budget=1.0)
>>> ledger.charge("web", 0.6, epoch=0, why="epoch"), ledger.charge("web", 0.6, epoch=1, why="epoch")
(True, False)
>>> round(ledger.spent("web"), 3), ledger.spent("db")
(0.6, 0.0)
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

TOLERANCE = 1e-12  # relative: float sums of charges may exceed the budget in the last bit


class BudgetLedger:
    """Spent privacy (ρ, zCDP) per stream for one release target, with a budget per stream (module docstring)."""

    def __init__(self, directory: str | Path, target: str, budget: float) -> None:
        self.budget = budget
        self.path = Path(directory) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', target)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spent: dict[str, float] = {}
        self._steps: dict[tuple[str, int], int] = {}
        self._read = 0  # bytes of the file already applied
        with self._locked():
            pass

    def _locked(self):
        ledger = self

        class _Lock:
            def __enter__(self):
                self.handle = open(ledger.path, "a+b")
                fcntl.flock(self.handle, fcntl.LOCK_EX)
                ledger._catch_up(self.handle)
                return self.handle

            def __exit__(self, *exc):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
                self.handle.close()

        return _Lock()

    def _catch_up(self, handle) -> None:
        """Apply the records appended since the last read (by this process or others)."""
        handle.seek(self._read)
        data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line (a crash mid-write) is ignored
        for line in complete.splitlines():
            self._apply(json.loads(line))
        self._read += len(complete)

    def _apply(self, record: dict) -> None:
        stream = record["stream"]
        if "spend" in record:
            self._spent[stream] = self._spent.get(stream, 0.0) + float(record["spend"])
        else:
            key = (stream, int(record["epoch"]))
            self._steps[key] = max(self._steps.get(key, 0), int(record["step"]))

    def _append(self, handle, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        handle.seek(0, os.SEEK_END)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
        self._apply(record)
        self._read += len(line)

    def spent(self, stream: str) -> float:
        return self._spent.get(stream, 0.0)

    def released_steps(self, stream: str, epoch: int) -> int:
        """The last release step recorded for the stream's epoch (0 when none)."""
        return self._steps.get((stream, epoch), 0)

    def charge(self, stream: str, rho: float, *, epoch: int, why: str) -> bool:
        """Record a spend of ``rho`` if the stream's budget allows it; False (nothing written) if not."""
        with self._locked() as handle:
            if self.spent(stream) + rho > self.budget * (1 + TOLERANCE):
                return False
            self._append(handle, {"stream": stream, "spend": rho, "epoch": epoch, "why": why})
            return True

    def record_step(self, stream: str, epoch: int, step: int) -> None:
        """Record, before it goes out, that release ``step`` of the stream's ``epoch`` is released."""
        with self._locked() as handle:
            self._append(handle, {"stream": stream, "epoch": epoch, "step": step})

    def streams(self) -> dict[str, float]:
        return dict(self._spent)

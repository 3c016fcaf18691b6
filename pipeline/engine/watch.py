"""Checks of the decode step that make a quietly wrong run loud: most of the first events dead-lettered (the wire
format or ``[source.schema]`` does not fit the input), or a field the operators read that no event has (a misspelt
name, which would leave an operator without a value to score).

Each check looks at the first events only, a whole batch at a time, and says what it found in one WARNING per run:
the decode step hands every decoded batch with its dead letters to :meth:`DecodeWatch.observe`, and the runner calls
:meth:`DecodeWatch.finish` at the end, for inputs shorter than a check's window. The workers of a process share one
watch; each process checks the events it reads.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import threading
from collections import Counter

import msgspec
import numpy as np

from operators.batch import Batch
from pipeline.engine.decode import DeadLetter, RecordBatch
from pipeline.engine.fields import sample_fields

log = logging.getLogger("vigil")

DEAD_WINDOW = 1_000  # the first events, whose dead-lettered share is checked
FIELD_WINDOW = 10_000  # the first valid events, in which every field the operators read should appear
SAMPLED_PAYLOADS = 5  # recent payloads whose field names the missing-field warning lists
EXAMPLE_CHARS = 60  # of a dead letter's payload, in the warning
SCHEMA_HINT = "check [source.schema] (vigil config check CONFIG --sample FILE)"


class DecodeWatch:
    """The checks of one run over the decode step's output."""

    def __init__(self, preset: str = "vigil") -> None:
        self.preset = preset  # the schema's preset, which says where a payload's field names are
        self.lock = threading.Lock()
        self.watching = True  # until both checks are done: after that a batch costs one attribute read
        self.events = 0  # read in the dead-letter window
        self.dead: Counter[str] = Counter()  # their dead letters by reason...
        self.examples: dict[str, DeadLetter] = {}  # ...and the first of each reason
        self.dead_checked = False
        self.valid = 0  # read in the field window
        self.unseen: dict[str, None] | None = None  # the fields asked for and not seen yet (known from the first batch)
        self.recent: list[bytes] = []  # the payloads of the last batch with valid events
        self.fields_checked = False

    def observe(self, records: RecordBatch, batch: Batch, dead: list[DeadLetter]) -> None:
        """Count ``records``' outcome: ``batch``, its valid events (with a column per field asked for), and ``dead``."""
        if not self.watching:
            return
        with self.lock:
            if not self.dead_checked:
                self._count_dead(records, dead)
            if not self.fields_checked:
                self._see_fields(records, batch)
            self.watching = not (self.dead_checked and self.fields_checked)

    def finish(self) -> None:
        """The checks whose window the input did not fill, over the events there were."""
        with self.lock:
            if not self.dead_checked and self.events:
                self._check_dead()
            if not self.fields_checked and self.valid:
                self._check_fields()

    def _count_dead(self, records: RecordBatch, dead: list[DeadLetter]) -> None:
        room = DEAD_WINDOW - self.events
        if len(records.payloads) > room:  # the window ends inside this batch: its dead letters up to there
            last = records.position(room - 1).sort_key()
            dead = [letter for letter in dead if letter.source.sort_key() <= last]
        self.events += min(room, len(records.payloads))
        for letter in dead:
            self.dead[letter.reason] += 1
            self.examples.setdefault(letter.reason, letter)
        if self.events >= DEAD_WINDOW:
            self._check_dead()

    def _check_dead(self) -> None:
        self.dead_checked = True
        total = sum(self.dead.values())
        if 2 * total <= self.events:
            return
        reason, count = self.dead.most_common(1)[0]
        example = self.examples[reason]
        payload = example.payload if len(example.payload) <= EXAMPLE_CHARS else example.payload[:EXAMPLE_CHARS] + " ..."
        log.warning("%d of the first %d events were dead-lettered; top reason %s (%d): %s — e.g. %s; %s", total,
                    self.events, reason, count, example.detail, payload, SCHEMA_HINT)

    def _see_fields(self, records: RecordBatch, batch: Batch) -> None:
        if self.unseen is None:
            self.unseen = dict.fromkeys([*batch.numeric, *batch.text_columns])
        rows = min(len(batch), FIELD_WINDOW - self.valid)
        if rows:
            self.recent = records.payloads
        for name in list(self.unseen):
            numbers, texts = batch.numeric.get(name), batch.text_columns.get(name)
            if ((numbers is not None and not np.isnan(numbers[:rows]).all())
                    or (texts is not None and np.not_equal(texts[:rows], None).any())):
                del self.unseen[name]
        self.valid += rows
        if self.valid >= FIELD_WINDOW or not self.unseen:
            self._check_fields()

    def _check_fields(self) -> None:
        self.fields_checked = True
        if not self.unseen:
            return
        recent = []
        for payload in self.recent[-SAMPLED_PAYLOADS:]:
            with contextlib.suppress(msgspec.DecodeError):
                recent.append(msgspec.json.decode(payload))
        seen = sorted(sample_fields(self.preset, [record for record in recent if isinstance(record, dict)]))
        for name in self.unseen:
            close = difflib.get_close_matches(name, seen, n=1)
            log.warning("field %r, which the operators read, is in none of the first %d valid events; recent events "
                        "have %s%s", name, self.valid, ", ".join(seen) or "no numeric or string fields",
                        f" — did you mean {close[0]!r}?" if close else "")

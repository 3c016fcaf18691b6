"""Running one operator over a stream the way a shard does: through a chain with its entity index."""
from __future__ import annotations

import itertools

import numpy as np

from operators.base import Operator
from operators.entities import EntityIndex
from operators.event import Alert, Event
from operators.registry import OperatorChain


def run_operator(operator: Operator, events: list[Event], sizes=(64,), *, column: str | None = None,
                 max_entities: int = 1_000_000) -> tuple[np.ndarray, list[Alert]]:
    """The operator's published column (its name by default; NaN-free concatenation over batches) and its
    alerts, for ``events`` cut into batches of the given sizes (cycled)."""
    chain = OperatorChain([operator], EntityIndex(max_entities))
    column = column or operator.name
    scores, alerts, start = [], [], 0
    for size in itertools.cycle(sizes):
        if start >= len(events):
            break
        found, batch = chain.process_batch(events[start : start + size])
        alerts += found
        scores.append(batch.scores.get(column, np.empty(0)))
        start += size
    return (np.concatenate(scores) if scores else np.empty(0)), alerts


def is_plain(value) -> bool:
    """Numbers, strings, bytes, numeric numpy arrays, and lists and string-keyed dicts of them (the snapshot rule)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, list):
        return all(is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_plain(item) for key, item in value.items())
    return False

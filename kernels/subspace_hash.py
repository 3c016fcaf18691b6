"""RS-Hash: outlier scores from cell counts in randomly shifted grids over random subspaces, for a sliding window.

Each of ``components`` grids (Sathe and Aggarwal, 2016) draws a cell width f uniformly from (1/√s, 1 − 1/√s), with
s the reference size, then r of the d fields, r an integer drawn uniformly from [1 + ½·log_max(2, 1/f) s,
log_max(2, 1/f) s], and a shift α_j uniformly from (0, f) per field. A row falls in the cell
⌊((x_j − low_j) / span_j + α_j) / f⌋ over its r fields, where low and span are the minimum and range of the
reference rows. A row's *rarity* is −mean over grids of log2(1 + the number of reference rows in its cell): rows in
sparse cells of many subspaces are outliers even when most of their fields are ordinary, which is where distance
detectors are weakest (irrelevant and sparse fields).

Unlike the paper's streaming variant, whose time-decayed counts live in a shared count-min sketch, the counts here
are exact and cover exactly the reference rows the caller keeps (a sliding window): rows are added and removed one
by one, in order, so a row's count never includes itself or a later row, whatever the batching. Cells are keyed by
a 64-bit hash of their coordinates per grid, in one open-addressing table per grid (linear probing, deletion by
backward shift), at most half full.

Why hand-written: PySAD's RSHash (the baseline in ``vigil evaluate tabular``) scores one row per Python call, decays
instead of forgetting, and wants the ranges up front; none of these suits a batched, bounded, causal operator.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> grids = SubspaceGridCounts(n_features=4, reference_size=500, seed=0)
>>> grids.reset(rng.normal(size=(500, 4)))
>>> rarity = grids.rarity(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]))
>>> bool(rarity[1] > rarity[0])
True

References
----------
Sathe, S. and Aggarwal, C. C. (2016). Subspace outlier detection in linear time with randomized hashing. *ICDM*.
"""
from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from kernels.state import Stateful

_EMPTY = np.uint64(0)


@numba.njit(cache=True)
def _mix(h):  # pragma: no cover - compiled
    """splitmix64's finaliser: every input bit reaches every output bit."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True)
def _cell_keys(rows, low, span, dims, lengths, shifts, widths, out):  # pragma: no cover - compiled
    """``out[i, g]``: the key of row i's cell in grid g, never 0 (0 marks an empty slot)."""
    for i in range(rows.shape[0]):
        for g in range(dims.shape[0]):
            h = np.uint64(g + 1)
            for position in range(lengths[g]):
                j = dims[g, position]
                cell = math.floor(((rows[i, j] - low[j]) / span[j] + shifts[g, position]) / widths[g])
                h = _mix(h ^ np.uint64(np.int64(cell)))
            out[i, g] = h | np.uint64(1)


@numba.njit(cache=True)
def _find(keys, grid, key):  # pragma: no cover - compiled
    """The slot holding ``key`` in ``grid``'s table, or the empty slot where it would go."""
    mask = keys.shape[1] - 1
    slot = np.int64(_mix(key) & np.uint64(mask))
    while keys[grid, slot] != key and keys[grid, slot] != _EMPTY:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True)
def _add(keys, counts, grid, key):  # pragma: no cover - compiled
    slot = _find(keys, grid, key)
    keys[grid, slot] = key
    counts[grid, slot] += 1


@numba.njit(cache=True)
def _remove(keys, counts, grid, key):  # pragma: no cover - compiled
    """One count less; an emptied slot is refilled by backward shift, so probes never cross a stale key."""
    mask = keys.shape[1] - 1
    hole = _find(keys, grid, key)
    counts[grid, hole] -= 1
    if counts[grid, hole] > 0:
        return
    keys[grid, hole] = _EMPTY
    slot = (hole + 1) & mask
    while keys[grid, slot] != _EMPTY:
        home = np.int64(_mix(keys[grid, slot]) & np.uint64(mask))
        # The entry may move into the hole unless its home lies cyclically in (hole, slot].
        if (slot - home) & mask >= (slot - hole) & mask:
            keys[grid, hole], counts[grid, hole] = keys[grid, slot], counts[grid, slot]
            keys[grid, slot], counts[grid, slot] = _EMPTY, 0
            hole = slot
        slot = (slot + 1) & mask


@numba.njit(cache=True)
def _scan(row_keys, expiring_keys, expires, keys, counts, learn, out):  # pragma: no cover - compiled
    """Rarity of each row against the table; if ``learn``, each row then joins and, where ``expires``, the matching
    row of ``expiring_keys`` leaves, before the next row is scored."""
    grids = row_keys.shape[1]
    for i in range(row_keys.shape[0]):
        total = 0.0
        for g in range(grids):
            total += math.log2(1.0 + counts[g, _find(keys, g, row_keys[i, g])])
        out[i] = -total / grids
        if learn:
            for g in range(grids):
                _add(keys, counts, g, row_keys[i, g])
                if expires[i]:
                    _remove(keys, counts, g, expiring_keys[i, g])


class SubspaceGridCounts(Stateful):
    """Exact RS-Hash cell counts of a reference set that changes row by row (module docstring).

    Parameters
    ----------
    n_features
        Fields per row.
    reference_size
        The most rows counted at once (s in the paper): it sets the cell widths and subspace sizes and the tables.
    components
        Number of grids.
    seed
        Seeds the widths, subspaces and shifts.
    """

    def __init__(self, n_features: int, reference_size: int, *, components: int = 100, seed: int = 0) -> None:
        if components < 1 or reference_size < 2:
            raise ValueError("components must be at least 1 and reference_size at least 2")
        rng = np.random.default_rng(seed)
        s = reference_size
        self.widths = rng.uniform(1 / math.sqrt(s), 1 - 1 / math.sqrt(s), components)
        log_s = np.log(s) / np.log(np.maximum(2.0, 1.0 / self.widths))
        high = np.floor(log_s).astype(np.int64)
        low = np.minimum(np.ceil(1 + 0.5 * log_s).astype(np.int64), high)
        self.lengths = np.minimum(rng.integers(low, high + 1), n_features)
        self.dims = np.zeros((components, int(self.lengths.max())), dtype=np.int64)
        self.shifts = np.zeros(self.dims.shape)
        for g, r in enumerate(self.lengths):
            self.dims[g, :r] = rng.choice(n_features, size=r, replace=False)
            self.shifts[g, :r] = rng.uniform(0, self.widths[g], r)
        self.d = n_features
        slots = 1 << (2 * reference_size - 1).bit_length()  # at most half full
        self.keys = np.zeros((components, slots), dtype=np.uint64)
        self.counts = np.zeros((components, slots), dtype=np.int32)
        self.low, self.span = np.zeros(n_features), np.ones(n_features)

    def cell_keys(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), len(self.widths)), dtype=np.uint64)
        _cell_keys(np.ascontiguousarray(rows, dtype=np.float64), self.low, self.span, self.dims, self.lengths,
                   self.shifts, self.widths, out)
        return out

    def reset(self, rows: np.ndarray, *, low: np.ndarray | None = None, span: np.ndarray | None = None) -> None:
        """Count exactly ``rows``, on the grid they span (or the given ``low`` and ``span``)."""
        if low is None:
            low, high = (rows.min(axis=0), rows.max(axis=0)) if len(rows) else (np.zeros(self.d), np.ones(self.d))
            span = high - low
        self.low, self.span = np.asarray(low, dtype=np.float64), np.where(np.asarray(span) > 0, span, 1.0)
        self.keys[:], self.counts[:] = _EMPTY, 0
        if len(rows):
            keys = self.cell_keys(rows)
            _scan(keys, keys, np.zeros(len(rows), dtype=np.bool_), self.keys, self.counts, True, np.empty(len(rows)))

    def rarity(self, rows: np.ndarray, expiring: np.ndarray | None = None, expires: np.ndarray | None = None, *,
               learn: bool = False) -> np.ndarray:
        """Rarity of each row; with ``learn``, row i then joins the counts and ``expiring[i]`` leaves them where
        ``expires[i]``, before row i + 1 is scored."""
        keys = self.cell_keys(rows)
        if expiring is None:
            expiring, expires = keys, np.zeros(len(rows), dtype=np.bool_)
        out = np.empty(len(rows))
        _scan(keys, self.cell_keys(expiring), expires, self.keys, self.counts, learn, out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """The grid's units only: the counts are those of the caller's reference rows, rebuilt by :meth:`reset`."""
        return {"low": self.low.copy(), "span": self.span.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.low = np.array(state["low"], dtype=np.float64)
        self.span = np.array(state["span"], dtype=np.float64)

    def state_bytes(self) -> int:
        return self.keys.nbytes + self.counts.nbytes + self.low.nbytes + self.span.nbytes

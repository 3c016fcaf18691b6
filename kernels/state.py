"""The one state vocabulary of Vigil: everything that holds state across batches speaks it.

Operators, their kernels, calibrated alerting and the shard's entity index all implement
:class:`Stateful`:

* ``snapshot()`` returns the state as plain data: numbers, strings, bytes, lists, dicts and numeric
  numpy arrays, never pickled code and never a view of live buffers (the object may go on changing);
* ``restore(state)`` loads such a snapshot into a freshly built object of the same parameters;
* ``state_bytes()`` is the memory the state holds now, for ``vigil_operator_state_bytes``.

>>> class Counter(Stateful):
...     def __init__(self):
...         self.n = 0
...     def snapshot(self):
...         return {"n": self.n}
...     def restore(self, state):
...         self.n = int(state["n"])
...     def state_bytes(self):
...         return 8
>>> copy = Counter()
>>> copy.restore(Counter().snapshot())
>>> copy.n
0
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Stateful(ABC):
    """Snapshot, restore and size of a piece of streaming state (module docstring)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The state as plain data, independent of the live object."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` into this freshly built object."""

    @abstractmethod
    def state_bytes(self) -> int:
        """Memory held by the state now, in bytes."""


def tensor_bytes(tensors) -> int:
    """Bytes of the elements of some torch tensors or numpy arrays.

    >>> import numpy as np
    >>> tensor_bytes([np.zeros(3), np.zeros((2, 2), dtype=np.float32)])
    40
    """
    return sum(t.nbytes for t in tensors)


class SlotArrays:
    """State held in arrays whose first axis is a slot (a model, a stream): subclasses define ``_allocate(slots)``
    (fresh arrays) and ``_arrays()`` (the arrays, in a fixed order); slots can then grow and be reset."""

    def _allocate(self, slots: int) -> None:
        raise NotImplementedError

    def _arrays(self) -> list:
        raise NotImplementedError

    @property
    def slots(self) -> int:
        return len(self._arrays()[0])

    def resize(self, slots: int) -> None:
        """Room for ``slots`` slots, the new ones fresh; never shrinks."""
        if slots <= self.slots:
            return
        old = self._arrays()
        self._allocate(slots)
        for mine, kept in zip(self._arrays(), old):
            mine[: len(kept)] = kept

    def reset(self, slots) -> None:
        """These slots back to zero."""
        for array in self._arrays():
            array[slots] = 0

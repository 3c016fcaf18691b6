"""Partition-local shards: state keys that Bytewax places on the worker that reads their source partition.

With ``pipeline.shard_by = "partition"`` each source partition is one shard, so a decoded batch goes whole to the
operators of its partition. Bytewax 0.21 places the two independently:

* a partition of a ``FixedPartitionedSource`` is read by worker ``sorted(parts).index(part) % workers``;
* the state of key ``k`` lives on worker ``siphash13(k) % workers``: Rust's ``DefaultHasher`` (SipHash-1-3 with
  zero keys) over ``str``'s ``Hash``, the UTF-8 bytes followed by ``0xff``.

:func:`shard_key` names a partition's shard ``"<part>#<n>"`` with the smallest ``n`` whose hash agrees with the
partition's index modulo ``PLACEMENT_MODULUS`` (840 = lcm(1..8)): for every total worker count dividing 840
(1 to 8, 10, 12, 14, 15, 20, 24, ...) the shard then lives where its partition is read, no batch crosses to
another worker or process, and the key does not depend on the worker count, so recovery state survives a rescale.
With any other worker count the result is the same, only exchanged. ``tests/engine/test_placement.py`` checks the
placement against a real Bytewax cluster, so an upgrade that changes Bytewax's routing fails there.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

PLACEMENT_MODULUS = 840  # lcm(1, ..., 8)
_MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with the zero key (Aumasson and Bernstein, SipHash: a fast short-input PRF, INDOCRYPT 2012), as
    Rust's ``DefaultHasher::new()`` computes it. Written out because no Python library exposes that keyed variant
    (CPython's ``hash`` uses a random key); it only runs when a partition's shard is first named.

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    whole = len(data) - len(data) % 8
    for start in range(0, whole, 8):
        word = int.from_bytes(data[start:start + 8], "little")
        v3 ^= word
        rounds(1)
        v0 ^= word
    word = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= word
    rounds(1)
    v0 ^= word
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_state_worker(key: str, workers: int) -> int:
    """The worker on which Bytewax 0.21 keeps the state of ``key``."""
    return siphash13(key.encode("utf-8") + b"\xff") % workers


@functools.lru_cache(maxsize=65536)
def shard_key(part: str, index: int) -> str:
    """The shard key of the source partition ``part``, the ``index``-th of its source's sorted partitions.

    >>> shard_key("0-events", 0)
    '0-events#574'
    >>> all(bytewax_state_worker(shard_key("0-events", 5), workers) == 5 % workers for workers in range(1, 9))
    True
    """
    target = index % PLACEMENT_MODULUS
    n = 0
    while bytewax_state_worker(f"{part}#{n}", PLACEMENT_MODULUS) != target:
        n += 1
    return f"{part}#{n}"


class PartitionShards:
    """Maps a record batch's source partition to its shard key."""

    def __init__(self, parts: Sequence[str]) -> None:
        self.index = {part: i for i, part in enumerate(sorted(parts))}

    def __call__(self, part: str) -> str:
        return shard_key(part, self.index[part])

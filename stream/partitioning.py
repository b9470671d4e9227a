"""Which partition a key lands on: Kafka's default (Java) partitioner, murmur2.

The worker needs this to find the partition of a user it did not just read an event of (a catalog
change or a timer reaching the user). Every Kairos producer uses librdkafka's ``murmur2_random``
partitioner, which for a non-empty key is the same function, as are Kafka's Java clients and aiokafka.
"""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (seed 0x9747b28c), as a signed 32-bit int like Java's."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    tail = data[4 * n4 :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (_hash(data) & 0x7FFFFFFF) % partitions


# Admission checks every record's key against its partition, and the same users come back again
# and again: the pure-Python hash (about 4 µs) is worth remembering, within a bounded cache.
_hash = lru_cache(maxsize=1 << 16)(murmur2)

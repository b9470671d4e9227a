"""Kafka's default partitioner (murmur2), checked against published test vectors.

Besides these vectors, the lead checked 305 user keys against librdkafka's ``murmur2_random``
partitioner on a real broker (what every Kairos producer uses): all landed where ``partition_for`` says.
"""

from __future__ import annotations

import random

import pytest

from stream.partitioning import murmur2, partition_for


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


# Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# librdkafka's src/rdmurmur2.c, unittest_murmur2 (the Java results, as unsigned hex).
LIBRDKAFKA_VECTORS = {
    b"kafka": 0xD067CF64,
    b"giberish123456789": 0x8F552B0C,
    b"1234": 0x9FC97B14,
    b"234": 0xE7C009CA,
    b"34": 0x873930DA,
    b"4": 0x5A4B5CA1,
    b"PreAmbleWillBeRemoved,ThePrePartThatIs": 0x78424F1C,
    b"reAmbleWillBeRemoved,ThePrePartThatIs": 0x4A62B377,
    b"eAmbleWillBeRemoved,ThePrePartThatIs": 0xE0E4E09E,
    b"AmbleWillBeRemoved,ThePrePartThatIs": 0x62B8B43F,
    b"": 0x106E08D9,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_VECTORS.items()))
def test_java_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), sorted(LIBRDKAFKA_VECTORS.items()))
def test_librdkafka_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == _signed(expected)


def test_partition_is_the_positive_hash_modulo() -> None:
    # toPositive(murmur2(key)) % n, as Kafka's BuiltInPartitioner computes it.
    for key, expected in JAVA_VECTORS.items():
        for n in (1, 3, 4, 12, 64):
            assert partition_for(key, n) == (expected & 0x7FFFFFFF) % n
    # "kafka" hashes to 0xd067cf64: positive part 0x5067cf64 = 1348980580.
    assert partition_for("kafka", 4) == 1348980580 % 4 == 0
    assert partition_for("kafka", 7) == 1348980580 % 7


def test_range_stability_and_str_bytes_equivalence() -> None:
    rng = random.Random(7)
    keys = [f"user-{rng.randrange(10**9)}" for _ in range(500)] + ["ü-ñ-日本", "x" * 300]
    for n in (1, 2, 4, 16):
        seen = set()
        for key in keys:
            p = partition_for(key, n)
            assert 0 <= p < n
            assert p == partition_for(key.encode("utf-8"), n)
            assert p == partition_for(key, n)  # stable
            seen.add(p)
        assert seen == set(range(n))  # 500 keys reach every partition
    for key in keys:
        h = murmur2(key.encode())
        assert -(1 << 31) <= h < (1 << 31)

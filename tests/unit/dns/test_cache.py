"""The answer cache on its own: bounds, expiry, TTL aging and capping."""

import struct

from kzgate.dns.cache import Cache, CacheKey


def key(i: int) -> CacheKey:
    return (b"\x01" + bytes([97 + i]) + b"\x00", 1, 1, False, False)


# A fake "reply": two TTL fields at offsets 0 and 4.
REPLY = struct.pack("!II", 300, 60)


def ttls(buf: bytearray) -> tuple[int, ...]:
    return struct.unpack("!II", bytes(buf))


def test_ttls_age_by_whole_seconds_and_stop_at_zero() -> None:
    cache = Cache()
    cache.put(key(0), REPLY, 60, [0, 4], [300, 60], [], now=10.0)
    entry = cache.get(key(0), 10.5)
    assert entry is not None
    assert ttls(entry.aged(10.5)) == (300, 60)
    assert ttls(entry.aged(15.99)) == (295, 55)
    assert ttls(entry.aged(69.0)) == (241, 1)
    assert ttls(entry.aged(80.0)) == (230, 0)  # beyond expiry, never negative


def test_expired_entries_are_misses_and_dropped() -> None:
    cache = Cache()
    cache.put(key(0), REPLY, 60, [0, 4], [300, 60], [], now=0.0)
    assert cache.get(key(0), 59.999) is not None
    assert cache.get(key(0), 60.0) is None
    assert len(cache) == 0


def test_ttl_is_capped_at_max_ttl_also_in_the_served_records() -> None:
    cache = Cache(max_ttl=100)
    cache.put(key(0), REPLY, 300, [0, 4], [300, 60], [], now=0.0)
    entry = cache.get(key(0), 0.0)
    assert entry is not None and entry.expires == 100.0
    assert ttls(entry.aged(0.0)) == (100, 60)


def test_ttl_zero_and_size_zero_store_nothing() -> None:
    cache = Cache()
    cache.put(key(0), REPLY, 0, [0, 4], [0, 0], [], now=0.0)
    assert len(cache) == 0
    cache = Cache(max_entries=0)
    cache.put(key(0), REPLY, 60, [0, 4], [60, 60], [], now=0.0)
    assert len(cache) == 0


def test_oldest_insertion_is_evicted_first_and_reinsertion_refreshes() -> None:
    cache = Cache(max_entries=3)
    for i in range(3):
        cache.put(key(i), REPLY, 60, [], [], [], now=float(i))
    cache.put(key(0), REPLY, 60, [], [], [], now=5.0)  # 0 becomes the youngest
    cache.put(key(3), REPLY, 60, [], [], [], now=6.0)
    assert len(cache) == 3
    assert cache.get(key(1), 7.0) is None
    assert all(cache.get(key(i), 7.0) is not None for i in (0, 2, 3))


def test_cname_targets_are_kept_with_the_entry() -> None:
    cache = Cache()
    cache.put(key(0), REPLY, 60, [], [], [b"\x01x\x00"], now=0.0)
    entry = cache.get(key(0), 1.0)
    assert entry is not None and entry.targets == (b"\x01x\x00",)
    cache.clear()
    assert len(cache) == 0

from kzgate.api.ratelimit import RateLimiter


def test_burst_then_refuse_then_refill() -> None:
    limiter = RateLimiter(per_second=2, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another client has its own bucket
    assert not limiter.allow("a", 0.4)  # 0.8 tokens: not yet
    assert limiter.allow("a", 0.6)
    assert not limiter.allow("a", 0.6)


def test_client_table_stays_bounded() -> None:
    limiter = RateLimiter(per_second=1, burst=1, max_clients=100)
    for i in range(1000):
        limiter.allow(f"c{i}", float(i) / 1000)
    assert len(limiter._buckets) <= 100

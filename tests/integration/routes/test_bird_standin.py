"""The shipped BIRD configs end to end, with `ip route` standing in for kzgate.

The kzgate host's BIRD (configs/bird-rtbh.conf) learns table 666 and announces
it; the router's BIRD (configs/bird-rtbh-router.conf) holds the routes as
blackholes and installs them into its kernel, and packets from a customer
behind the router are dropped. The routes are written with
``ip route add blackhole P table 666 proto 252``, exactly what kzgate writes, so
these tests need nothing but BIRD; test_bird_daemon.py repeats the important
ones with kzgate itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import birdnet, netns

pytestmark = netns.required

RTBH = frozenset({birdnet.BLACKHOLE, birdnet.NO_EXPORT})


@pytest.fixture(scope="module")
def bnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[birdnet.BirdNet]:
    """One topology for the module (BGP takes ~5 s to come up); each test starts empty."""
    with birdnet.birdnet(tmp_path_factory.mktemp("bird")) as made:
        yield made


@pytest.fixture
def net(bnet: birdnet.BirdNet) -> Iterator[birdnet.BirdNet]:
    yield bnet
    bnet.flush()
    bnet.wait_imported(0, timeout=15)


def test_a_route_in_the_table_is_a_blackhole_on_the_router(net: birdnet.BirdNet) -> None:
    net.add("10.66.0.1/32")
    net.add("fd66::1/128")
    routes = net.wait_router({"10.66.0.1/32": True, "fd66::1/128": True})
    assert routes["10.66.0.1/32"] == birdnet.Route("10.66.0.1/32", "blackhole", RTBH, "192.0.2.1")
    assert routes["fd66::1/128"] == birdnet.Route("fd66::1/128", "blackhole", RTBH, "100::1")
    assert net.router_kernel() == {"10.66.0.1/32": "blackhole", "fd66::1/128": "blackhole"}

    net.delete("10.66.0.1/32")
    net.wait_router({"10.66.0.1/32": False, "fd66::1/128": True})
    net.delete("fd66::1/128")
    net.wait_router({"fd66::1/128": False})
    assert net.router_kernel() == {}


def test_only_kzgates_sink_routes_are_announced(net: birdnet.BirdNet) -> None:
    """Another protocol number or a route that forwards is not kzgate's: never announced."""
    net.add("10.66.1.0/24", proto=251)
    net.add("fd66:1::/64", proto=251)
    netns.ip(f"-n {net.host} route add 10.66.2.0/24 dev lo table 666 proto 252")
    net.add("10.66.3.0/24", kind="unreachable")
    net.add("10.66.4.0/24", kind="prohibit")
    net.add("10.66.5.0/24")  # the marker: once it is there, the others had their chance
    net.wait_router({"10.66.5.0/24": True, "10.66.3.0/24": True, "10.66.4.0/24": True})
    assert set(net.router_routes()) == {"10.66.3.0/24", "10.66.4.0/24", "10.66.5.0/24"}
    netns.ip(f"-n {net.host} route flush table 666 proto 251")
    netns.ip(f"-n {net.host} -6 route flush table 666 proto 251")


def test_packets_from_the_customer_to_a_blackholed_address_are_dropped(
    net: birdnet.BirdNet,
) -> None:
    v4, v4_alt = net.targets_v4
    v6, v6_alt = net.targets_v6
    net.add(f"{v4}/32")
    net.add(f"{v6}/128")
    net.wait_router({f"{v4}/32": True, f"{v6}/128": True})
    answers = {a: net.reachable_from_customer(a) for a in (v4, v4_alt, v6, v6_alt)}
    assert answers == {v4: False, v4_alt: True, v6: False, v6_alt: True}

    net.delete(f"{v4}/32")
    net.delete(f"{v6}/128")
    net.wait_router({f"{v4}/32": False, f"{v6}/128": False})
    assert net.reachable_from_customer(v4)
    assert net.reachable_from_customer(v6)


def test_a_burst_reaches_the_router_without_lost_netlink_events(net: birdnet.BirdNet) -> None:
    """50,000 routes at once: with the shipped `netlink rx buffer` BIRD loses no event.

    With the kernel's default buffer (~256 queued events) such a burst overflows
    it ("Kernel dropped some netlink messages") and the router waits for the next
    scan; the count of those log lines must stay as it was.
    """
    dropped = net.host_bird.dropped()
    count = 50_000
    lines = "".join(
        f"route add blackhole 10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"
        f" table {birdnet.TABLE} proto {birdnet.PROTO}\n"
        for i in range(count)
    )
    netns.run(net.host, "ip", "-batch", "-", input=lines, timeout=120)
    net.wait_imported(count, timeout=60)
    assert net.host_bird.dropped() == dropped
    net.flush()
    net.wait_imported(0, timeout=60)
    assert net.host_bird.dropped() == dropped

"""Route messages, byte for byte: against iproute2's own requests, pyroute2, and a real dump.

The iproute2 bytes were captured with ``strace -e sendmsg -xx`` around ``ip``
(iproute2 6.1, kernel 6.18) in a scratch namespace; the dump is the kernel's
answer to our strict dump request there (tables 666 and 667, protocols 252
and static). Only the seq differs from the capture, and is put back.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from kzgate.enforce.nft.wire import messages
from kzgate.enforce.routes.decode import Key, Route, dump_part, route
from kzgate.enforce.routes.drift import DriftDetector, filter_program
from kzgate.enforce.routes.encode import ADD_FLAGS, DELETE_FLAGS, add, delete, dump_request
from kzgate.enforce.routes.netlink import Change, Pace, RouteSocket
from kzgate.enforce.routes.wire import (
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTN_BLACKHOLE,
    RTN_PROHIBIT,
    RTN_UNREACHABLE,
)
from kzgate.names import IPNetwork

SEQ = 1796052502


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def iproute2(flags: int, kind: int, body: str) -> bytes:
    data = bytes.fromhex(body)
    return struct.pack("=IHHII", 16 + len(data), kind, flags, SEQ, 0) + data


# ip route add table 666 proto 252 blackhole 10.1.2.0/24 (CREATE|EXCL, never REPLACE)
IP_ADD_V4 = iproute2(0x605, 24, "021800 0000fc0006 00000000 08000f009a020000 080001000a010200")
# ip -6 route add table 666 proto 252 prohibit 2001:db8::/48
IP_ADD_V6 = iproute2(
    0x605, 24, "0a3000 0000fc0008 00000000 08000f009a020000 1400010020010db8" + "00" * 12
)
# ip route del table 666 proto 252 blackhole 10.1.2.0/24 (scope NOWHERE: any)
IP_DELETE_V4 = iproute2(0x5, 25, "021800 0000fcff06 00000000 08000f009a020000 080001000a010200")
# ip -6 route del table 666 proto 252 blackhole 2001:db8::/48
IP_DELETE_V6 = iproute2(
    0x5, 25, "0a3000 0000fc0006 00000000 08000f009a020000 1400010020010db8" + "00" * 12
)


def test_adds_are_what_ip_route_add_sends() -> None:
    assert add(SEQ, net("10.1.2.0/24"), 666, 252, RTN_BLACKHOLE) == IP_ADD_V4
    assert add(SEQ, net("2001:db8::/48"), 666, 252, RTN_PROHIBIT) == IP_ADD_V6


def test_deletes_are_what_ip_route_del_sends() -> None:
    assert delete(SEQ, net("10.1.2.0/24"), 666, 252, RTN_BLACKHOLE) == IP_DELETE_V4
    assert delete(SEQ, net("2001:db8::/48"), 666, 252, RTN_BLACKHOLE) == IP_DELETE_V6


# The kernel's answer to dump_request(1, family, 666, 252), captured with routes
#   table 666 proto 252: blackhole default, blackhole 10.1.2.0/24,
#                        unreachable 192.0.2.7, blackhole 2001:db8::/48,
#                        prohibit 2001:db8:1::1
#   table 666 proto static: blackhole 10.9.0.0/16      (filtered out by the kernel)
#   table 667 proto 252: blackhole 10.1.3.0/24         (filtered out by the kernel)
DUMP_V4 = bytes.fromhex(
    "240000001800220001000000462a000002000000fcfc00060000000008000f009a020000"
    "2c0000001800220001000000462a000002180000fcfc00060000000008000f009a020000080001000a010200"
    "2c0000001800220001000000462a000002200000fcfc00070000000008000f009a02000008000100c0000207"
    "140000000300220001000000462a000000000000"
)
DUMP_V6 = bytes.fromhex(
    "740000001800220001000000462a00000a300000fcfc00060000000008000f009a020000"
    "1400010020010db800000000000000000000000008000600000400000800040001000000"
    "24000c00000000000000000000000000000000000000000000000000000000000000000005001400000000"
    "00740000001800220001000000462a00000a800000fcfc00080000000008000f009a020000"
    "1400010020010db800010000000000000000000108000600000400000800040001000000"
    "24000c00000000000000000000000000000000000000000000000000000000000000000005001400000000"
    "00140000000300220001000000462a000000000000"
)


def test_a_real_dump_decodes_to_our_routes() -> None:
    found = [route(m) for m in messages(DUMP_V4 + DUMP_V6)]
    assert found == [
        Route(net("0.0.0.0/0"), 666, 252, RTN_BLACKHOLE),
        Route(net("10.1.2.0/24"), 666, 252, RTN_BLACKHOLE),
        Route(net("192.0.2.7/32"), 666, 252, RTN_UNREACHABLE),
        None,  # NLMSG_DONE
        Route(net("2001:db8::/48"), 666, 252, RTN_BLACKHOLE),
        Route(net("2001:db8:1::1/128"), 666, 252, RTN_PROHIBIT),
        None,
    ]


def slow_dump(data: bytes, seq: int, table: int, protocol: int) -> dict[Key, int]:
    """What dump_part must find: ``route`` on each message of ``seq`` up to the dump's end."""
    out: dict[Key, int] = {}
    for msg in messages(data):
        if msg.seq != seq:
            continue
        if msg.kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
            break
        r = route(msg)
        if r is not None and r.table == table and r.protocol == protocol:
            family = 2 if r.prefix.version == 4 else 10
            out[(family, int(r.prefix.network_address), r.prefix.prefixlen)] = r.type
    return out


def test_the_fast_dump_reader_reads_a_real_dump() -> None:
    found: dict[Key, int] = {}
    end = dump_part(DUMP_V4, 1, 666, 252, found)
    assert end is not None and end.kind == 3
    assert dump_part(DUMP_V6, 1, 666, 252, found) is not None
    assert found == {
        (2, 0, 0): RTN_BLACKHOLE,
        (2, 0x0A010200, 24): RTN_BLACKHOLE,
        (2, 0xC0000207, 32): RTN_UNREACHABLE,
        (10, 0x20010DB8 << 96, 48): RTN_BLACKHOLE,
        (10, 0x20010DB8_0001 << 80 | 1, 128): RTN_PROHIBIT,
    }
    assert found == slow_dump(DUMP_V4, 1, 666, 252) | slow_dump(DUMP_V6, 1, 666, 252)
    assert dump_part(DUMP_V4, 2, 666, 252, {}) is None  # another seq: not ours, no end


@given(st.binary(max_size=300), st.integers(0, 3), st.sampled_from([666, 0]))
def test_the_fast_dump_reader_agrees_with_route_on_any_bytes(
    data: bytes, seq: int, table: int
) -> None:
    found: dict[Key, int] = {}
    dump_part(data, seq, table, 252, found)
    assert found == slow_dump(data, seq, table, 252)


def test_the_dump_request_asks_the_kernel_to_filter() -> None:
    msg = next(messages(dump_request(9, 2, 666, 252)))
    assert (msg.kind, msg.flags, msg.seq) == (26, 0x301, 9)
    # rtmsg: family 2, protocol 252, table 0; then RTA_TABLE = 666
    assert msg.payload == bytes.fromhex("02000000 00fc0000 00000000 08000f00 9a020000")


# -- against pyroute2, and back ---------------------------------------------------------

v4 = st.builds(
    lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6 = st.builds(
    lambda a, n: ipaddress.IPv6Network((a, n), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
prefixes = st.one_of(v4, v6)
tables = st.integers(1, 2**32 - 1)
protocols = st.integers(0, 255)
types = st.sampled_from([RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT])


def pyroute2_message(
    kind: int, flags: int, seq: int, prefix: IPNetwork, table: int, proto: int, rtype: int
) -> bytes:
    msg = rtmsg()
    msg["family"] = 2 if prefix.version == 4 else 10
    msg["dst_len"] = prefix.prefixlen
    msg["proto"] = proto
    msg["scope"] = 255 if kind == RTM_DELROUTE and prefix.version == 4 else 0
    msg["type"] = rtype
    msg["attrs"] = [("RTA_TABLE", table), ("RTA_DST", str(prefix.network_address))]
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


@given(prefixes, tables, protocols, types, st.integers(0, 2**32 - 1))
def test_encode_matches_pyroute2(
    prefix: IPNetwork, table: int, proto: int, rtype: int, seq: int
) -> None:
    assert add(seq, prefix, table, proto, rtype) == pyroute2_message(
        RTM_NEWROUTE, ADD_FLAGS, seq, prefix, table, proto, rtype
    )
    assert delete(seq, prefix, table, proto, rtype) == pyroute2_message(
        RTM_DELROUTE, DELETE_FLAGS, seq, prefix, table, proto, rtype
    )


@given(prefixes, tables, protocols, types)
def test_decode_reads_back_what_encode_wrote(
    prefix: IPNetwork, table: int, proto: int, rtype: int
) -> None:
    for build in (add, delete):
        (msg,) = messages(build(1, prefix, table, proto, rtype))
        assert route(msg) == Route(prefix, table, proto, rtype)


@given(st.lists(st.tuples(prefixes, types), max_size=20), st.integers(0, 3))
def test_the_fast_dump_reader_reads_what_encode_wrote(
    routes: list[tuple[IPNetwork, int]], cut: int
) -> None:
    data = b"".join(add(1, p, 666, 252, t) for p, t in routes)
    data = data[: len(data) - cut]  # a truncated tail ends the walk, as in messages()
    found: dict[Key, int] = {}
    assert dump_part(data, 1, 666, 252, found) is None
    assert found == slow_dump(data, 1, 666, 252)


@given(st.binary(max_size=200))
def test_decode_takes_any_bytes(data: bytes) -> None:
    for msg in messages(data):
        found = route(msg)
        assert found is None or isinstance(found, Route)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:40],  # RTA_DST cut short: the message is truncated
        lambda b: b[:17] + b"\x21" + b[18:],  # dst_len 33 for IPv4
        lambda b: b[:16] + b"\x07" + b[17:],  # a family that is neither
        lambda b: b[:17] + b"\x10" + b[18:],  # /16 with host bits set (10.1.2.0)
        lambda b: b[:36] + b"\x07\x00" + b[38:],  # RTA_DST 3 bytes long
    ],
)
def test_what_we_could_not_have_written_is_no_route(damage: object) -> None:
    data = damage(add(1, net("10.1.2.0/24"), 666, 252, RTN_BLACKHOLE))  # type: ignore[operator]
    assert all(route(m) is None for m in messages(data))


# -- drift, pure ----------------------------------------------------------------------


def test_drift_is_a_foreign_change_of_what_we_hold() -> None:
    held = {net("10.1.2.0/24"): RTN_BLACKHOLE}
    detector = DriftDetector(666, 252, lambda: held)
    ours = Route(net("10.1.2.0/24"), 666, 252, RTN_BLACKHOLE)
    assert detector.feed(RTM_DELROUTE, ours)  # someone deleted ours
    assert not detector.feed(RTM_NEWROUTE, ours)  # someone re-added exactly ours
    assert detector.feed(RTM_NEWROUTE, Route(ours.prefix, 666, 252, RTN_PROHIBIT))  # changed it
    assert detector.feed(RTM_NEWROUTE, Route(net("10.7.0.0/16"), 666, 252, RTN_BLACKHOLE))
    assert not detector.feed(RTM_DELROUTE, Route(net("10.7.0.0/16"), 666, 252, RTN_BLACKHOLE))
    # other tables and other protocols are not ours to judge
    assert not detector.feed(RTM_DELROUTE, Route(ours.prefix, 667, 252, RTN_BLACKHOLE))
    assert not detector.feed(RTM_DELROUTE, Route(ours.prefix, 666, 4, RTN_BLACKHOLE))
    assert not detector.feed(RTM_NEWROUTE, Route(net("10.7.0.0/16"), 666, 4, RTN_BLACKHOLE))


def run_bpf(code: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """A tiny interpreter for the four opcodes filter_program uses."""
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x30:
            acc = packet[k]
        elif op == 0x20:
            acc = int.from_bytes(packet[k : k + 4], "big")
        elif op == 0x15:
            pc += jt if acc == k else jf
        elif op == 0x06:
            return k
        pc += 1


@pytest.mark.parametrize(
    ("proto", "pid", "kept"),
    [(252, 999, True), (252, 4242, False), (4, 999, False), (4, 4242, False)],
)
def test_the_kernel_filter_keeps_others_changes_of_our_protocol(
    proto: int, pid: int, kept: bool
) -> None:
    msg = bytearray(add(1, net("10.1.2.0/24"), 666, proto, RTN_BLACKHOLE))
    msg[12:16] = struct.pack("=I", pid)  # the notification names the socket that made it
    assert (run_bpf(filter_program(252, 4242), bytes(msg)) != 0) == kept


# -- pacing ---------------------------------------------------------------------------


class FakeSocket:
    """The kernel's answers as rtnetlink gives them: an ack where NLM_F_ACK asks, an error always.

    ``refuse`` maps a seq to the errno its message gets; each answer is its own datagram.
    """

    def __init__(self, refuse: dict[int, int] | None = None) -> None:
        self.sends: list[tuple[float, int]] = []
        self.pending: list[bytes] = []
        self.refuse = refuse or {}
        self.asked: list[int] = []  # seqs sent with NLM_F_ACK

    def getsockname(self) -> tuple[int, int]:
        return (4242, 0)

    def settimeout(self, _: float | None) -> None:
        pass

    def send(self, data: bytes) -> int:
        import time

        self.sends.append((time.monotonic(), len(list(messages(data)))))
        for msg in messages(data):
            code = self.refuse.get(msg.seq, 0)
            if msg.flags & 0x4:
                self.asked.append(msg.seq)
            if code or msg.flags & 0x4:
                answer = struct.pack("=IHHIIi", 36, 2, 0x100, msg.seq, 4242, -code)
                answer += struct.pack("=IHHII", len(msg.payload) + 16, msg.kind, 0, msg.seq, 0)
                self.pending.append(answer)
        return len(data)

    def recv(self, _: int, flags: int = 0) -> bytes:
        if not self.pending:
            raise BlockingIOError
        return self.pending.pop(0)


def test_only_a_chunks_last_message_is_acked_and_every_error_is_reported() -> None:
    import errno

    changes: list[Change] = [
        (RTM_NEWROUTE, ipaddress.IPv4Network((i << 8, 24)), RTN_BLACKHOLE) for i in range(5000)
    ]
    sock = FakeSocket(refuse={3: errno.EEXIST, 4096: errno.EINVAL, 4097: errno.ESRCH})
    writer = RouteSocket(sock)  # type: ignore[arg-type]
    failed = writer.write(changes, 666, 252, ignore=frozenset({errno.ESRCH}))
    assert failed == {2: errno.EEXIST, 4095: errno.EINVAL}  # 4096 is the first chunk's barrier
    assert [n for _, n in sock.sends] == [4096, 904]
    assert sock.asked == [4096, 5000]  # one ack per chunk: its last message
    assert not sock.pending  # every answer read: the next write starts clean


def test_large_changes_are_paced_and_small_ones_are_not() -> None:
    sock = FakeSocket()
    writer = RouteSocket(sock)  # type: ignore[arg-type]
    changes: list[Change] = [
        (RTM_NEWROUTE, ipaddress.IPv4Network((i << 8, 24)), RTN_BLACKHOLE) for i in range(250)
    ]
    assert writer.write(changes[:100], 666, 252, Pace(100, 0.05)) == {}
    assert [n for _, n in sock.sends] == [100]  # at once
    sock.sends.clear()
    assert writer.write(changes, 666, 252, Pace(100, 0.05)) == {}
    assert [n for _, n in sock.sends] == [100, 100, 50]
    gaps = [b[0] - a[0] for a, b in zip(sock.sends, sock.sends[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps

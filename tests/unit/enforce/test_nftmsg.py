"""The nf_tables message encoder and parser: byte layouts checked by hand, no sockets.

The expected bytes follow ``nft --debug=netlink`` 1.0.6 for the same elements
(keys big-endian, start then end, no end element at the top of the space, the
open-interval udata flag there) and linux/netfilter/nf_tables.h.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
import sys

import pytest

from kzgate.config import NftConfig
from kzgate.enforce.nft import decode, drift, encode, skeleton, wire
from kzgate.enforce.nft.skeleton import SETS, operator_rules, slot

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network


def elements(data: bytes) -> list[dict[int, bytes]]:
    """Each NFTA_LIST_ELEM's attributes, with the key unwrapped from NFTA_DATA_VALUE."""
    out = []
    for kind, value in wire.attrs(data):
        assert kind == wire.NFTA_LIST_ELEM
        inner = wire.attr_map(value)
        inner[wire.NFTA_SET_ELEM_KEY] = wire.attr_map(inner[wire.NFTA_SET_ELEM_KEY])[
            wire.NFTA_DATA_VALUE
        ]
        out.append(inner)
    return out


END = struct.pack("!I", wire.NFT_SET_ELEM_INTERVAL_END)


# --- attributes and headers ------------------------------------------------------


def test_attribute_is_length_type_value_padded_to_four() -> None:
    assert wire.attr(2, b"abcde") == struct.pack("=HH", 9, 2) + b"abcde\0\0\0"
    assert wire.nested(1, b"") == struct.pack("=HH", 4, 0x8001)


def test_netlink_header_is_host_endian_and_counts_itself() -> None:
    msg = wire.nlmsg(0x0A0C, 0x605, 7, b"xyzw")
    assert msg == struct.pack("=IHHII", 20, 0x0A0C, 0x605, 7, 0) + b"xyzw"


def test_nfgenmsg_res_id_is_big_endian() -> None:
    assert wire.nfgen(0, wire.NFNL_SUBSYS_NFTABLES) == b"\x00\x00\x00\x0a"


# --- elements ----------------------------------------------------------------------


def test_v4_prefix_is_a_start_and_an_end_element_with_exact_bytes() -> None:
    data = encode.prefix_elements(V4("10.1.2.0/24"))
    start = struct.pack("=HHHHHH", 16, 0x8001, 12, 0x8001, 8, 1) + bytes([10, 1, 2, 0])
    end = (
        struct.pack("=HHHHHH", 24, 0x8001, 12, 0x8001, 8, 1)
        + bytes([10, 1, 3, 0])
        + struct.pack("=HH", 8, wire.NFTA_SET_ELEM_FLAGS)
        + END
    )
    assert data == start + end


def test_v6_prefix_keys_are_sixteen_bytes_and_the_end_is_the_next_address() -> None:
    [start, end] = elements(encode.prefix_elements(V6("2001:db8::/32")))
    assert start[wire.NFTA_SET_ELEM_KEY] == ipaddress.IPv6Address("2001:db8::").packed
    assert wire.NFTA_SET_ELEM_FLAGS not in start
    assert end[wire.NFTA_SET_ELEM_KEY] == ipaddress.IPv6Address("2001:db9::").packed
    assert end[wire.NFTA_SET_ELEM_FLAGS] == END


def test_a_host_ends_at_the_next_address() -> None:
    [_, end] = elements(encode.prefix_elements(V4("192.0.2.255/32")))
    assert end[wire.NFTA_SET_ELEM_KEY] == bytes([192, 0, 3, 0])


@pytest.mark.parametrize(
    "net",
    [
        V4("255.255.255.0/24"),
        V4("0.0.0.0/0"),
        V4("255.255.255.255/32"),
        V6("::/0"),
        V6("ffff::/16"),
    ],
)
def test_a_prefix_at_the_top_of_the_space_is_an_open_start_element_alone(
    net: V4 | V6,
) -> None:
    [start] = elements(encode.prefix_elements(net, "c"))
    assert start[wire.NFTA_SET_ELEM_KEY] == net.network_address.packed
    assert wire.NFTA_SET_ELEM_FLAGS not in start
    # as nft 1.0.6 sends it: comment TLV, then flags TLV 1 = INTERVAL_OPEN (host-endian)
    flag = (1).to_bytes(4, sys.byteorder)
    assert start[wire.NFTA_SET_ELEM_USERDATA] == b"\x00\x02c\x00" + b"\x01\x04" + flag


def test_comment_is_a_nul_terminated_tlv_of_type_zero() -> None:
    assert encode.comment_udata("hello") == b"\x00\x06hello\x00"
    [start, end] = elements(encode.prefix_elements(V4("10.0.0.0/8"), "hello"))
    assert start[wire.NFTA_SET_ELEM_USERDATA] == b"\x00\x06hello\x00"
    assert wire.NFTA_SET_ELEM_USERDATA not in end


def test_a_long_comment_is_cut_to_128_bytes_on_a_character_boundary() -> None:
    assert len(encode.comment_udata("x" * 300)) == 2 + 128 + 1
    cut = encode.comment_udata("x" * 127 + "ж")  # the 2-byte letter would straddle the limit
    assert cut == bytes([0, 128]) + b"x" * 127 + b"\0"


def test_deletes_carry_no_comment() -> None:
    [start, _] = elements(encode.prefix_elements(V4("10.0.0.0/8"), "hello", delete=True))
    assert wire.NFTA_SET_ELEM_USERDATA not in start
    [top] = elements(encode.prefix_elements(V4("255.0.0.0/8"), "hello", delete=True))
    assert wire.NFTA_SET_ELEM_USERDATA not in top


@pytest.mark.parametrize(
    "net", [V4("10.1.2.0/24"), V4("1.2.3.4/32"), V6("2a00::/48"), V4("255.0.0.0/8"), V6("::/0")]
)
def test_the_fast_add_path_encodes_exactly_like_the_plain_one(net: V4 | V6) -> None:
    for comment in ("", "mci No. 1 of 2026-01-01"):
        assert encode._add_chunk(net, comment, {}) == encode.prefix_elements(net, comment)


# --- hash sets (hosts) -----------------------------------------------------------------


@pytest.mark.parametrize("host", [V4("192.0.2.7/32"), V4("255.255.255.255/32"), V6("2a00::1/128")])
def test_a_host_is_one_element_keyed_by_its_address(host: V4 | V6) -> None:
    [added] = [elements(chunk) for chunk in encode.HOSTS.added([(host, "mci No. 1")])]
    assert added == [
        {
            wire.NFTA_SET_ELEM_KEY: host.network_address.packed,
            wire.NFTA_SET_ELEM_USERDATA: encode.comment_udata("mci No. 1"),
        }
    ]
    [removed] = [elements(chunk) for chunk in encode.HOSTS.removed([host])]
    assert removed == [{wire.NFTA_SET_ELEM_KEY: host.network_address.packed}]
    # exactly the plain encoder's start element: no end, no open-interval flag
    plain = encode.element(host.network_address.packed, udata=encode.comment_udata("mci No. 1"))
    assert next(encode.HOSTS.added([(host, "mci No. 1")])) == plain
    assert next(encode.HOSTS.added([(host, "")])) == encode.element(host.network_address.packed)


def test_hosts_and_prefixes_go_to_their_own_sets() -> None:
    nets = [V4("1.2.3.4/32"), V4("1.2.3.0/24"), V6("2a00::1/128"), V6("2a00::/48"), V4("0.0.0.0/0")]
    names = [SETS[slot(n)].name for n in nets]
    assert names == [
        "blocked_hosts_v4",
        "blocked_v4",
        "blocked_hosts_v6",
        "blocked_v6",
        "blocked_v4",
    ]
    assert [s.keys.interval for s in SETS] == [False, True, False, True]


# --- batches -------------------------------------------------------------------------


def parse_batch(parts: list[bytes]) -> list[wire.Message]:
    return list(wire.messages(b"".join(parts)))


def test_batch_is_framed_by_begin_and_end_and_deletes_come_before_adds() -> None:
    b = encode.BatchBuilder("kzgate", 100)
    b.delete("blocked_v4", [V4("10.0.0.0/24")])
    b.add("blocked_v4", [(V4("10.0.0.0/16"), "c")])
    msgs = parse_batch(b.finish())
    assert [x.kind for x in msgs] == [0x10, 0x0A0E, 0x0A0C, 0x11]
    assert [x.seq for x in msgs] == [101, 102, 103, 104]
    assert b.acked == [102, 103]
    begin, delete, add, end = msgs
    for frame in (begin, end):
        assert frame.flags == wire.NLM_F_REQUEST and frame.payload == b"\0\0\0\x0a"
    assert delete.flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK
    # EXCL: an element already there is drift, not silently fine
    assert add.flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_EXCL
    family = add.payload[0]
    top = wire.attr_map(add.payload, 4)
    assert family == wire.NFPROTO_INET
    assert top[wire.NFTA_SET_ELEM_LIST_TABLE] == b"kzgate\0"
    assert top[wire.NFTA_SET_ELEM_LIST_SET] == b"blocked_v4\0"
    assert len(elements(top[wire.NFTA_SET_ELEM_LIST_ELEMENTS])) == 2


def test_flush_is_a_delsetelem_without_elements() -> None:
    b = encode.BatchBuilder("t", 0)
    b.flush("blocked_v6")
    [_, flush, _] = parse_batch(b.finish())
    assert flush.kind == 0x0A0E
    assert set(wire.attr_map(flush.payload, 4)) == {
        wire.NFTA_SET_ELEM_LIST_TABLE,
        wire.NFTA_SET_ELEM_LIST_SET,
    }


def test_large_changes_are_chunked_below_the_attribute_limit_keeping_pairs_together() -> None:
    nets = [V4((0x0A000000 + i * 256, 24)) for i in range(5000)]
    b = encode.BatchBuilder("t", 0)
    b.add("blocked_v4", [(n, "mci No. 1 of 2026-01-01") for n in nets])
    msgs = parse_batch(b.finish())[1:-1]
    assert len(msgs) > 1 and len(b.acked) == len(msgs)
    seen = []
    for msg in msgs:
        body = wire.attr_map(msg.payload, 4)[wire.NFTA_SET_ELEM_LIST_ELEMENTS]
        assert len(body) <= encode.MAX_ELEMENTS_BYTES
        elems = elements(body)
        assert len(elems) % 2 == 0  # never a start without its end
        seen += [e[wire.NFTA_SET_ELEM_KEY] for e in elems[::2]]
    assert seen == [n.network_address.packed for n in nets]


def test_no_message_when_there_is_nothing_to_do() -> None:
    b = encode.BatchBuilder("t", 0)
    b.delete("blocked_v4", [])
    b.add("blocked_v6", [])
    assert len(parse_batch(b.finish())) == 2 and b.acked == []


def test_sequence_numbers_wrap_and_skip_zero() -> None:
    b = encode.BatchBuilder("t", 0xFFFFFFFE)
    b.flush("s")
    assert [x.seq for x in parse_batch(b.finish())] == [0xFFFFFFFF, 1, 2]


# --- answers -------------------------------------------------------------------------


def error_msg(err: int, seq: int, *, tlvs: bytes = b"") -> wire.Message:
    echoed = struct.pack("=IHHII", 64, 0x0A0E, 5, seq, 0)  # capped: the header only
    flags = wire.NLM_F_CAPPED | (wire.NLM_F_ACK_TLVS if tlvs else 0)
    payload = struct.pack("=i", -err) + echoed + tlvs
    return next(wire.messages(wire.nlmsg(wire.NLMSG_ERROR, flags, seq, payload)))


def test_ack_and_errors_are_read_by_errno_and_request_sequence() -> None:
    assert decode.parse_ack(error_msg(0, 7)) == decode.Ack(seq=7, errno=0)
    missing = decode.parse_ack(error_msg(errno.ENOENT, 9))
    assert (missing.seq, missing.errno) == (9, errno.ENOENT)
    assert missing.describe().startswith("ENOENT")


def test_extended_ack_message_and_offset_are_kept() -> None:
    tlvs = wire.attr(wire.NLMSGERR_ATTR_MSG, b"set is full\0") + wire.attr(
        wire.NLMSGERR_ATTR_OFFS, struct.pack("=I", 40)
    )
    ack = decode.parse_ack(error_msg(errno.ENOSPC, 3, tlvs=tlvs))
    assert (ack.errno, ack.message, ack.offset) == (errno.ENOSPC, "set is full", 40)
    assert ack.describe() == "ENOSPC (28): set is full"


def test_messages_stop_at_a_truncated_tail() -> None:
    one = wire.nlmsg(3, 0, 1, b"abcd")
    assert [x.seq for x in wire.messages(one + one[:10])] == [1]


def test_rule_counters_are_read_from_the_lookup_and_counter_expressions() -> None:
    def expr(name: str, data: bytes) -> bytes:
        return wire.nested(
            wire.NFTA_LIST_ELEM, wire.attr(1, wire.strz(name)) + wire.nested(2, data)
        )

    exprs = (
        expr("payload", wire.attr(1, b"\0\0\0\1"))
        + expr("lookup", wire.attr(wire.NFTA_LOOKUP_SET, b"blocked_v6\0"))
        + expr(
            "counter", wire.attr(1, struct.pack("!Q", 999)) + wire.attr(2, struct.pack("!Q", 12))
        )
    )
    payload = wire.nfgen(1) + wire.attr(1, b"kzgate\0") + wire.attr(2, b"forward\0")
    payload += wire.nested(wire.NFTA_RULE_EXPRESSIONS, exprs)
    msg = next(wire.messages(wire.nlmsg(0x0A06, 2, 1, payload)))
    assert decode.rule_counters(msg) == ("forward", "blocked_v6", 12)
    lookup_only = wire.nested(
        wire.NFTA_RULE_EXPRESSIONS,
        expr("lookup", wire.attr(wire.NFTA_LOOKUP_SET, b"blocked_hosts_v4\0")),
    )
    uncounted = wire.nfgen(1) + wire.attr(1, b"kzgate\0") + wire.attr(2, b"mine\0") + lookup_only
    msg = next(wire.messages(wire.nlmsg(0x0A06, 2, 1, uncounted)))
    assert decode.rule_counters(msg) == ("mine", "blocked_hosts_v4", 0)
    bare = next(wire.messages(wire.nlmsg(0x0A06, 2, 1, wire.nfgen(1) + wire.attr(1, b"kzgate\0"))))
    assert decode.rule_counters(bare) is None


def test_generation_is_read_from_newgen() -> None:
    gen = wire.nlmsg(
        0x0A0F, 0, 1, wire.nfgen(0) + wire.attr(wire.NFTA_GEN_ID, struct.pack("!I", 4242))
    )
    assert decode.generation(next(wire.messages(gen))) == 4242
    assert encode.getgen_request(5)[4:6] == struct.pack("=H", 0x0A10)


# --- drift -------------------------------------------------------------------------


def event(kind: int, table: str = "kzgate", portid: int = 99, family: int = 1) -> decode.Event:
    return decode.Event(kind, family, table, portid)


def newgen(pid: int) -> decode.Event:
    return decode.Event(wire.NFT_MSG_NEWGEN, 0, "", 0, pid)


@pytest.mark.parametrize(
    "kind",
    [wire.NFT_MSG_DELTABLE, wire.NFT_MSG_DELSET, wire.NFT_MSG_DELSETELEM, wire.NFT_MSG_NEWSETELEM],
)
def test_a_foreign_change_to_our_sets_is_drift_at_the_end_of_its_transaction(kind: int) -> None:
    d = drift.DriftDetector("kzgate", own_portid=5, watch_chains=False)
    assert d.feed(event(kind)) is False
    assert d.feed(newgen(1234)) is True
    assert d.feed(newgen(1234)) is False  # the next transaction starts clean


def test_our_own_changes_other_tables_and_other_families_are_not_drift() -> None:
    d = drift.DriftDetector("kzgate", own_portid=5, watch_chains=True)
    d.own_pids.add(777)
    for e in (
        event(wire.NFT_MSG_DELSETELEM, portid=5),
        event(wire.NFT_MSG_DELTABLE, table="filter"),
        event(wire.NFT_MSG_DELTABLE, family=2),
        event(wire.NFT_MSG_NEWSET),
        event(wire.NFT_MSG_NEWCHAIN),
    ):
        d.feed(e)
        assert d.feed(newgen(1)) is False
    d.feed(event(wire.NFT_MSG_DELRULE))  # an nft child of ours writing the skeleton
    assert d.feed(newgen(777)) is False


def test_chain_and_rule_changes_count_only_when_we_own_the_chains() -> None:
    full = drift.DriftDetector("kzgate", own_portid=5, watch_chains=True)
    sets_only = drift.DriftDetector("kzgate", own_portid=5, watch_chains=False)
    for kind in (wire.NFT_MSG_DELCHAIN, wire.NFT_MSG_DELRULE, wire.NFT_MSG_NEWRULE):
        full.feed(event(kind))
        sets_only.feed(event(kind))
        assert full.feed(newgen(1)) is True
        assert sets_only.feed(newgen(1)) is False


def test_notifications_are_parsed_to_events() -> None:
    body = wire.nfgen(1) + wire.attr(1, b"kzgate\0") + wire.attr(2, b"blocked_v4\0")
    msg = next(wire.messages(struct.pack("=IHHII", 16 + len(body), 0x0A0E, 0, 0, 4321) + body))
    assert decode.parse_event(msg) == decode.Event(wire.NFT_MSG_DELSETELEM, 1, "kzgate", 4321)
    gen = wire.nfgen(0) + wire.attr(1, struct.pack("!I", 9)) + wire.attr(2, struct.pack("!I", 555))
    assert decode.parse_event(next(wire.messages(wire.nlmsg(0x0A0F, 0, 0, gen)))) == decode.Event(
        wire.NFT_MSG_NEWGEN, 0, "", 0, 555
    )
    assert (
        decode.parse_event(next(wire.messages(wire.nlmsg(0x0110, 0, 0, gen)))) is None
    )  # not nftables


# --- the skeleton --------------------------------------------------------------------


def test_full_skeleton_owns_hook_chains_and_removes_unconfigured_ones() -> None:
    text = skeleton(NftConfig(True, "kz", ("forward",), "reject"))
    assert "add table inet kz\n" in text
    assert "add set inet kz blocked_v4 { type ipv4_addr; flags interval; }" in text
    assert "add set inet kz blocked_hosts_v6 { type ipv6_addr; }" in text
    assert "flush chain inet kz forward\n" in text
    # one rule per set, each after the flush of its chain
    rules = [line for line in text.splitlines() if line.startswith("add rule inet kz forward")]
    assert [r.split("@")[1].split()[0] for r in rules] == [s.name for s in SETS]
    assert (
        "add rule inet kz forward ip6 daddr @blocked_v6 counter reject with icmpx "
        "admin-prohibited" in text
    )
    assert "delete chain inet kz output" in text
    assert "delete table" not in text and "flush set" not in text


def test_set_only_skeleton_never_touches_chains() -> None:
    cfg = NftConfig(True, "kz", ("forward",), "drop", mode="set-only")
    text = skeleton(cfg)
    assert "chain" not in text and "rule" not in text
    assert text.count("add set inet kz ") == 4
    assert operator_rules(cfg) == [
        "ip daddr @blocked_hosts_v4 counter drop",
        "ip daddr @blocked_v4 counter drop",
        "ip6 daddr @blocked_hosts_v6 counter drop",
        "ip6 daddr @blocked_v6 counter drop",
    ]

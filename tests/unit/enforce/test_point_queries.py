"""Point queries for the probes: the GETSETELEM request and answer, the route lookup, on bytes.

The request's expected bytes are what ``nft get element inet kzgate
blocked_v4 { 10.0.0.5 }`` (nft 1.0.6) sent, captured with strace; the answers
are what kernel 6.18 sent back to kzgate's request in a namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import random

import pytest

from kzgate.enforce.nft import decode, encode, wire
from kzgate.enforce.routes.decode import covering
from kzgate.enforce.routes.wire import AF_INET, AF_INET6, RTN_BLACKHOLE, RTN_UNREACHABLE
from kzgate.probes.kernel import connect_class, interval_text

# strace of nft 1.0.6: nlmsg_len=68, GETSETELEM, NLM_F_REQUEST|NLM_F_ACK, seq 1, family
# inet; set "blocked_v4", table "kzgate", elements { elem { key { value 10.0.0.5 } } }
NFT_GET_10_0_0_5 = bytes.fromhex(
    "44000000" "0d0a" "0500" "01000000" "00000000"
    "01000000"
    "0f000200" "626c6f636b65645f763400" "00"
    "0b000100" "6b7a6761746500" "00"
    "14000380" "10000180" "0c000180" "08000100" "0a000005"
)  # fmt: skip

# kernel 6.18's answer to the start query for 10.0.0.5 in a set holding 10.0.0.0/24
# with the comment "x": the start element 10.0.0.0 and its userdata
START_ANSWER = bytes.fromhex(
    "4c0000000c0a0000070000001e750000010000030b0001006b7a6761746500000f000200626c6f636b"
    "65645f763400001c000300180001000c000100080001000a0000000800060000027800"
)
# ... and to the end query (flag INTERVAL_END) for 10.0.0.6: the end element 10.0.1.0
END_ANSWER = bytes.fromhex(
    "4c0000000c0a0000070000001e750000010000030b0001006b7a6761746500000f000200626c6f636b"
    "65645f763400001c000300180001000c000100080001000a0001000800030000000001"
)


def one(data: bytes) -> wire.Message:
    [msg] = wire.messages(data)
    return msg


def test_the_start_query_is_byte_for_byte_what_nft_sends() -> None:
    got = encode.getsetelem_request("kzgate", "blocked_v4", bytes([10, 0, 0, 5]), 1)
    assert got == NFT_GET_10_0_0_5


def test_the_end_query_carries_the_interval_end_flag_and_is_never_a_dump() -> None:
    got = one(encode.getsetelem_request("kzgate", "blocked_v6", bytes(16), 9, end=True))
    assert got.kind == wire.msg_type(wire.NFT_MSG_GETSETELEM)
    assert got.flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK  # no NLM_F_DUMP
    assert got.seq == 9
    top = wire.attr_map(got.payload, wire.NFGENMSG.size)
    assert wire.text(top[wire.NFTA_SET_ELEM_LIST_SET]) == "blocked_v6"
    [(_, elem)] = wire.attrs(top[wire.NFTA_SET_ELEM_LIST_ELEMENTS])
    inner = wire.attr_map(elem)
    assert inner[wire.NFTA_SET_ELEM_FLAGS] == b"\0\0\0\1"
    assert wire.attr_map(inner[wire.NFTA_SET_ELEM_KEY])[wire.NFTA_DATA_VALUE] == bytes(16)


def test_the_kernels_answers_give_the_start_and_the_end_element() -> None:
    assert decode.found_element(one(START_ANSWER)) == decode.Element(bytes([10, 0, 0, 0]), False)
    assert decode.found_element(one(END_ANSWER)) == decode.Element(bytes([10, 0, 1, 0]), True)


def test_an_ack_or_an_element_that_is_no_address_is_no_element() -> None:
    ack = wire.nlmsg(wire.NLMSG_ERROR, 0, 7, b"\0" * 20)
    assert decode.found_element(one(ack)) is None
    odd_key = START_ANSWER.replace(
        bytes.fromhex("080001000a000000"), bytes.fromhex("0700010a0000ff00")
    )
    assert decode.found_element(one(odd_key)) is None


def test_any_bytes_give_an_element_or_none() -> None:
    rng = random.Random(14)
    kind = wire.msg_type(wire.NFT_MSG_NEWSETELEM)
    for length in range(0, 300):
        for _ in range(20):
            body = bytes(rng.getrandbits(8) for _ in range(length))
            found = decode.found_element(wire.Message(kind, 0, 1, 0, body))
            assert found is None or len(found.key) in (4, 16)
    for cut in range(len(START_ANSWER)):  # every truncation of a real answer
        for msg in wire.messages(START_ANSWER[:cut]):
            decode.found_element(msg)


@pytest.mark.parametrize(
    ("first", "after", "bits", "text"),
    [
        ("10.0.0.0", "10.0.1.0", 32, "10.0.0.0/24"),
        ("10.0.3.7", "10.0.3.8", 32, "10.0.3.7/32"),
        ("10.0.0.0", "10.0.0.3", 32, "10.0.0.0-10.0.0.2"),  # not one prefix: a range
        ("255.255.255.0", None, 32, "255.255.255.0/24"),  # open to the top
        ("fd00::", "fd00:0:0:1::", 128, "fd00::/64"),
        ("::", None, 128, "::/0"),
    ],
)
def test_an_interval_is_named_as_the_prefix_kzgate_wrote(
    first: str, after: str | None, bits: int, text: str
) -> None:
    end = None if after is None else int(ipaddress.ip_address(after))
    assert interval_text(int(ipaddress.ip_address(first)), end, bits) == text


def test_the_most_specific_of_our_routes_covers_an_address() -> None:
    v4 = lambda text: int(ipaddress.ip_address(text))  # noqa: E731
    routes = {
        (AF_INET, v4("10.0.0.0"), 8): RTN_UNREACHABLE,
        (AF_INET, v4("10.1.0.0"), 16): RTN_BLACKHOLE,
        (AF_INET, v4("10.1.2.3"), 32): RTN_BLACKHOLE,
        (AF_INET6, v4("10.1.2.3"), 128): RTN_BLACKHOLE,  # another family: never matched
    }
    assert covering(routes, AF_INET, v4("10.1.2.3")) == ((AF_INET, v4("10.1.2.3"), 32), 6)
    assert covering(routes, AF_INET, v4("10.1.2.4")) == ((AF_INET, v4("10.1.0.0"), 16), 6)
    assert covering(routes, AF_INET, v4("10.2.0.1")) == ((AF_INET, v4("10.0.0.0"), 8), 7)
    assert covering(routes, AF_INET, v4("11.0.0.1")) is None
    assert covering({(AF_INET6, 0, 0): 6}, AF_INET6, 1 << 127) == ((AF_INET6, 0, 0), 6)


@pytest.mark.parametrize(
    ("udp", "tcp", "result"),
    [
        (errno.EPERM, "", "blocked: EPERM"),  # our output rule, drop or reject
        (None, "connected", "open: connected"),
        (None, "ECONNREFUSED", "open: ECONNREFUSED"),
        (None, "timeout", "open: sent, tcp timeout"),
        (None, "EHOSTUNREACH", "open: sent, tcp EHOSTUNREACH"),
        (errno.ENETUNREACH, "", "unreachable: ENETUNREACH"),
    ],
)
def test_connect_outcomes_map_to_the_agreed_strings(udp: int | None, tcp: str, result: str) -> None:
    assert connect_class(udp, tcp) == result

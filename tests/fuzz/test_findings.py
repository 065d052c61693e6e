"""What the fuzz harnesses found, one test each, next to the fix in the parser.

Each input is also in the corpus of the harness that found it (tests/fuzz/corpus/<name>/),
so test_replay.py replays it through the whole harness too.
"""

from __future__ import annotations

import struct

import pytest

from kzgate.enforce.nft.decode import parse_ack
from kzgate.enforce.nft.wire import Message
from kzgate.errors import InvalidTask, Malformed
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.schema import parse_task, url
from tests.support.protocol_fixtures import restrict


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1.8e308", b"9" * 400 + b".0"])
def test_json_number_that_overflows_to_infinity_is_refused(number: bytes) -> None:
    # json_strict (seed overflow-1e999): json.loads reads 1e999 as inf, which is the Infinity
    # the reader refuses by name and which json.dumps cannot write back as JSON.
    with pytest.raises(Malformed, match="out of range"):
        loads_object(b'{"a": ' + number + b"}", "payload")


def test_json_numbers_at_the_float_limits_are_read() -> None:
    value = loads_object(b'{"max": 1.7976931348623157e308, "tiny": 5e-324, "under": 1e-999}', "p")
    assert value == {"max": 1.7976931348623157e308, "tiny": 5e-324, "under": 0.0}


@pytest.mark.parametrize(
    "link", ["http://[::1:565]35/", "https://[::1]junk:99/p", "http://[2001:db8::1]x/"]
)
def test_url_with_text_after_the_ipv6_bracket_is_refused(link: str) -> None:
    # task_signed (corpus finding-url-text-after-ipv6-bracket): urlsplit reads the port after
    # the last ':' and ignores what sits between ']' and it, so these were stored as URLs.
    with pytest.raises(ValueError, match="after its IPv6 address"):
        url(link)


@pytest.mark.parametrize("link", ["http://[::1]/", "http://[::1]:8080/p", "http://[::1]:/"])
def test_url_with_an_ipv6_literal_and_a_port_is_kept(link: str) -> None:
    assert url(link) == link


@pytest.mark.parametrize(
    "link",
    ["https://example.kz:\U0001f600[::1:565]35/", "http://example.kz:8x/", "http://a.kz:[::1]/"],
)
def test_url_whose_port_is_not_digits_is_refused(link: str) -> None:
    # task_signed (corpus finding-url-port-not-digits): urlsplit read "::1:565" as the host of
    # the first link (a "[...]" anywhere in the authority) and no port at all, while kzgate
    # recorded host example.kz: two parsers, two hosts.
    with pytest.raises(ValueError, match=r"not a valid URL|port that is not a number"):
        url(link)


@pytest.mark.parametrize("link", ["http://example.kz:80/", "http://example.kz:/", "http://e.kz/"])
def test_url_with_a_numeric_or_empty_port_is_kept(link: str) -> None:
    assert url(link) == link


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\x80", "\u2028", "\u2029"])
@pytest.mark.parametrize("field", ["ground", "authority", "number", "url"])
def test_text_with_c1_controls_or_unicode_line_breaks_is_refused(char: str, field: str) -> None:
    # task_signed's one-line invariant (seeds ground-nel, authority-line-separator,
    # number-c1-csi, url-paragraph-separator): the schema refused only C0 and DEL, so NEL,
    # U+2028/2029 (line breaks to str.splitlines and to log readers) and C1 CSI (a terminal
    # escape) reached logs, EDE text and nft comments.
    targets = [{"type": "url", "value": f"https://a.kz/{char}x"}] if field == "url" else None
    task = restrict(targets=targets) if targets else restrict()
    if field == "number":
        task["instruction"]["number"] = f"1{char}2"
    elif field != "url":
        task[field] = f"a{char}b"
    with pytest.raises(InvalidTask, match=r"control characters|whitespace or control"):
        parse_task(task, b"{}", "kid")


def test_text_with_other_unicode_is_kept() -> None:
    task = parse_task(restrict(ground="Закон «О связи», ст. 41-1 \u200e\u00a0"), b"{}", "kid")
    assert task.ground == "Закон «О связи», ст. 41-1 \u200e\u00a0"


def test_an_error_ack_with_a_short_offset_attribute_is_read() -> None:
    # routes_decode (corpus finding-short-ack-offset): an NLMSGERR_ATTR_OFFS of fewer than 4
    # bytes made parse_ack (shared by the nft and routes enforcers) raise struct.error.
    echoed = struct.pack("=IHHII", 16, 24, 5, 9, 0)
    tlv = struct.pack("=HH", 6, 2) + b"\x01\x02" + b"\0\0"  # OFFS with a 2-byte value
    ack = parse_ack(Message(2, 0x300, 9, 0, struct.pack("=i", -22) + echoed + tlv))
    assert (ack.seq, ack.errno, ack.offset) == (9, 22, None)

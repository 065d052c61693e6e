"""Write the seed corpus: tests/fuzz/corpus/<harness>/seed-<what>, from real messages.

    .venv/bin/python tests/fuzz/py/_seeds.py

Queries and replies come from dnslib and dnspython (as clients, upstreams and secondaries
build them), tasks from kzgate.protocol.build signed with the fixed fuzzing key, plus the
near misses each parser must refuse. Rerunning rewrites the seed-* files and leaves the other
files (fuzzer finds, merged inputs) alone. TSIG-signed seeds are valid only for five minutes
after they are written; later they exercise the bad-time (NOTAUTH) path instead.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _dnsworld import query, reply  # noqa: E402
from _harness import RPZ_ORIGIN, TSIG_NAME, TSIG_SECRET  # noqa: E402
from _taskworld import NOW, STS_KEY, STS_KID, sign  # noqa: E402

from kzgate.protocol.build import new_task  # noqa: E402
from kzgate.protocol.jws import b64url_encode  # noqa: E402

CORPUS = HERE.parent / "corpus"
Seeds = Iterator[tuple[str, bytes]]
LONG_255 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 255 octets in wire form
HEADER = struct.Struct("!6H")


def _rr(rtype: int, rdata: bytes, owner: bytes = b"\xc0\x0c", ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def _opt(size: int = 1232, ttl: int = 0, rdata: bytes = b"", owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


def _wire_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


QUESTION = _wire_name("www.example.kz") + b"\x00\x01\x00\x01"


def queries() -> Seeds:
    """What subscribers send: ordinary queries, EDNS variants, and malformed ones."""
    for name, qtype in (
        ("bad.kz", "A"),
        ("www.bad.kz", "AAAA"),
        ("WwW.BaD.kZ", "MX"),
        ("good.kz", "A"),
        ("alias.kz", "A"),
        ("gone.kz", "AAAA"),
        ("blocked.example", "TXT"),
        ("example.com", "ANY"),
        ("xn--80ak6aa92e.kz", "HTTPS"),
        ("_sip._udp.example.kz", "SRV"),
        ("1.2.0.192.in-addr.arpa", "PTR"),
        (".", "NS"),
        (LONG_255[:-2] + "kz", "A"),
    ):
        yield f"{name.lower()[:40]}-{qtype}", query(name, qtype)
    yield "bad-edns-do", query("bad.kz", edns=True, do=True)
    yield "blocked-long-ede-udp512", query("blocked.example", "A", edns=True, udp=512)
    yield "good-edns-4096", query("good.kz", edns=True, udp=4096)
    yield "good-edns-do", query("good.kz", edns=True, do=True)
    yield "good-cd", query("good.kz", cd=True)
    yield "good-udp-size-0", query("good.kz", edns=True, udp=0)
    q = dns.message.make_query("bad.kz", "A", use_edns=0, payload=1232)
    q.id = 0x0101
    q.use_edns(
        0,
        0,
        1232,
        options=[dns.edns.CookieOption(b"12345678", b""), dns.edns.ECSOption("192.0.2.0", 24)],
    )
    yield "dnspython-cookie-ecs", q.to_wire()
    q.use_edns(1)
    yield "dnspython-edns-version-1", q.to_wire()
    yield (
        "padded-4000",
        HEADER.pack(7, 0x0100, 1, 0, 0, 1)
        + QUESTION
        + _opt(4096, 0, struct.pack("!HH", 12, 3980) + bytes(3980)),
    )
    # The 335-octet query of issue 10: labels 63, 63, 63, 61 and one more.
    long_name = b"".join(bytes([n]) + b"x" * n for n in (63, 63, 63, 61, 60)) + b"\x00"
    yield "issue10-335-octets", HEADER.pack(0x0335, 0x0100, 1, 0, 0, 0) + long_name + b"\0\1\0\1"
    max_name = _wire_name(LONG_255)
    yield "name-255-octets", HEADER.pack(1, 0x0100, 1, 0, 0, 0) + max_name + b"\0\1\0\1"
    base = HEADER.pack(0x1234, 0x0100, 1, 0, 0, 0) + QUESTION
    yield "no-question", HEADER.pack(2, 0x0100, 0, 0, 0, 0)
    yield "two-questions", HEADER.pack(3, 0x0100, 2, 0, 0, 0) + QUESTION * 2
    yield "qr-set", HEADER.pack(4, 0x8180, 1, 0, 0, 0) + QUESTION
    yield "opcode-notify", HEADER.pack(5, 0x2000, 1, 0, 0, 0) + QUESTION
    yield "opcode-update", HEADER.pack(6, 0x2800, 1, 0, 0, 0) + QUESTION
    yield "short-header", base[:7]
    yield "cut-in-question", base[:-3]
    yield "pointer-in-question", HEADER.pack(8, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1"
    yield "label-type-0x40", HEADER.pack(9, 0x0100, 1, 0, 0, 0) + b"\x41x\x00\0\1\0\1"
    yield "ancount-lie", HEADER.pack(10, 0x0100, 1, 0xFFFF, 0, 0) + QUESTION
    yield "two-opts", HEADER.pack(11, 0x0100, 1, 0, 0, 2) + QUESTION + _opt() + _opt()
    yield "opt-in-answer", HEADER.pack(12, 0x0100, 1, 1, 0, 0) + QUESTION + _opt()
    yield "opt-not-root", HEADER.pack(13, 0x0100, 1, 0, 0, 1) + QUESTION + _opt(owner=b"\xc0\x0c")
    yield (
        "opt-after-records",
        HEADER.pack(14, 0x0100, 1, 1, 1, 1)
        + QUESTION
        + _rr(1, b"\x01\x02\x03\x04")
        + _rr(16, b"\x01x", owner=b"\xc3\xff")
        + _opt(1400, 0x8000),
    )
    yield (
        "opt-rdata-overrun",
        HEADER.pack(15, 0x0100, 1, 0, 0, 1) + QUESTION + _opt(rdata=b"\0\0\0\4")[:-2],
    )


def replies() -> Seeds:
    """What upstreams send: a control octet (see dns_upstream_reply.py), then the reply."""
    edns, do, cd, tcp, upper = 1, 2, 4, 8, 16
    good = query("good.kz")
    www = query("www.example.kz", qid=0x77)
    yield "a-answer", bytes([0]) + reply(good, "good.kz. 300 IN A 192.0.2.7")
    yield "a-answer-edns-do", bytes([edns | do]) + reply(good, "good.kz. 300 IN A 192.0.2.7")
    yield "a-answer-upper-cd", bytes([upper | cd]) + reply(good, "good.kz. 30 IN A 192.0.2.8")
    yield (
        "cname-into-blocked",
        bytes([0])
        + reply(www, "www.example.kz. 60 IN CNAME cdn.bad.kz.", "cdn.bad.kz. 60 IN A 192.0.2.9"),
    )
    q = dns.message.make_query("www.example.kz", "A")
    q.id = 0x77
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("example.kz.", 60, "IN", "DNAME", "bad.kz."))
    r.answer.append(dns.rrset.from_text("www.example.kz.", 60, "IN", "CNAME", "www.bad.kz."))
    yield "dname-into-blocked", bytes([edns]) + r.to_wire()
    soa = "kz. 900 IN SOA ns.kz. h.kz. 1 2 3 4 300"
    yield "nxdomain-soa", bytes([0]) + reply(www, rcode=3, auth=soa)
    yield "nodata-soa", bytes([edns]) + reply(query("good.kz", "AAAA"), auth=soa)
    yield "servfail", bytes([0]) + reply(www, rcode=2)
    yield "refused", bytes([edns | do]) + reply(www, rcode=5)
    yield "tc-set", bytes([0]) + reply(www, tc=True)
    many = [f"www.example.kz. 300 IN A 192.0.2.{i}" for i in range(1, 121)]
    yield "too-big-for-udp", bytes([0]) + reply(www, *many)
    yield "big-over-tcp", bytes([tcp]) + reply(www, *many)
    yield "blocked-question", bytes([0]) + reply(query("bad.kz"), "bad.kz. 60 IN A 192.0.2.1")
    ttl_top = bytearray(reply(good, "good.kz. 300 IN A 192.0.2.7"))
    struct.pack_into("!I", ttl_top, len(ttl_top) - 10, 0x80000010)
    yield "ttl-top-bit", bytes([0]) + bytes(ttl_top)
    q = dns.message.make_query("www.example.kz", "A", use_edns=0, want_dnssec=True)
    q.id = 0x99
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.kz.", 60, "IN", "A", "192.0.2.1"))
    r.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER)])
    yield "dnspython-edns-ede", bytes([edns | do]) + r.to_wire()
    head = HEADER.pack(0x77, 0x8180, 1, 1, 0, 0) + QUESTION
    yield "cname-pointer-loop", bytes([0]) + head + _rr(5, b"\xc0" + bytes([12 + len(QUESTION)]))
    yield "cname-forward-pointer", bytes([0]) + head + _rr(5, b"\xc1\x00")
    yield "cname-past-rdata", bytes([0]) + head + _rr(5, b"\x03www") + b"\x00"
    yield "not-a-reply", bytes([0]) + HEADER.pack(0x77, 0x0100, 1, 0, 0, 0) + QUESTION
    yield "wrong-question", bytes([0]) + reply(query("other.kz"), "other.kz. 60 IN A 192.0.2.1")
    yield (
        "count-lie",
        bytes([0]) + HEADER.pack(0x77, 0x8180, 1, 5, 0, 0) + QUESTION + _rr(1, b"\1\2\3\4"),
    )
    yield "opt-in-answer", bytes([0]) + HEADER.pack(0x77, 0x8180, 1, 1, 0, 0) + QUESTION + _opt()
    yield (
        "soa-short-rdata",
        bytes([0])
        + HEADER.pack(0x77, 0x8183, 1, 0, 1, 0)
        + QUESTION
        + _rr(6, b"\x00\x00" + bytes(8)),
    )
    yield "header-only", bytes([0]) + HEADER.pack(0x77, 0x8180, 0, 0, 0, 0)


def _key() -> dns.tsig.Key:
    return dns.tsig.Key(dns.name.from_text(TSIG_NAME), TSIG_SECRET, "hmac-sha256")


def xfr_queries() -> Seeds:
    """What secondaries (and strangers) send to the transfer listener."""
    first = 2026112201  # the harness zone's first serial; its history starts there

    def make(qname: str, rdtype: str, rd: bool = False, **kw: Any) -> dns.message.Message:
        q = dns.message.make_query(qname, rdtype, **kw)
        q.id = 0x5EED
        if not rd:
            q.flags &= ~dns.flags.RD
        return q

    def ixfr(serial: int) -> dns.message.Message:
        q = make(RPZ_ORIGIN, "IXFR")
        q.authority.append(
            dns.rrset.from_text(
                RPZ_ORIGIN, 0, "IN", "SOA", f"localhost. hostmaster.{RPZ_ORIGIN} {serial} 1 1 1 1"
            )
        )
        return q

    cases: list[tuple[str, dns.message.Message]] = [
        ("axfr", make(RPZ_ORIGIN, "AXFR")),
        ("soa", make(RPZ_ORIGIN, "SOA")),
        ("ixfr-from-first", ixfr(first)),
        ("ixfr-from-second", ixfr(first + 1)),
        ("ixfr-current", ixfr(first + 3)),
        ("ixfr-unknown-serial", ixfr(7)),
        ("ixfr-without-soa", make(RPZ_ORIGIN, "IXFR")),
        ("a-for-origin", make(RPZ_ORIGIN, "A")),
        ("axfr-other-zone", make("example.kz.", "AXFR")),
        ("axfr-edns", make(RPZ_ORIGIN, "AXFR", use_edns=0, payload=4096)),
        ("axfr-rd", make(RPZ_ORIGIN, "AXFR", rd=True)),
        ("axfr-class-ch", make(RPZ_ORIGIN, "AXFR", rdclass="CH")),
    ]
    notify = make(RPZ_ORIGIN, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    cases.append(("notify-opcode", notify))
    for label, msg in cases:
        yield label, msg.to_wire()
        if label in ("axfr", "soa", "ixfr-from-first", "ixfr-current", "a-for-origin"):
            msg.use_tsig(_key())
            yield f"{label}-tsig", msg.to_wire()
    wrong = make(RPZ_ORIGIN, "AXFR")
    wrong.use_tsig(dns.tsig.Key(dns.name.from_text("other-key."), b"x" * 32, "hmac-sha256"))
    yield "axfr-tsig-unknown-key", wrong.to_wire()
    signed = make(RPZ_ORIGIN, "AXFR")
    signed.use_tsig(_key())
    bad_mac = bytearray(signed.to_wire())
    bad_mac[-10] ^= 0xFF  # inside the MAC
    yield "axfr-tsig-bad-mac", bytes(bad_mac)
    origin = _wire_name(RPZ_ORIGIN)
    yield "no-question", HEADER.pack(1, 0, 0, 0, 0, 0)
    yield "two-questions", HEADER.pack(2, 0, 2, 0, 0, 0) + (origin + b"\x00\xfc\x00\x01") * 2
    yield "response-bit", HEADER.pack(3, 0x8000, 1, 0, 0, 0) + origin + b"\x00\xfc\x00\x01"
    yield "opcode-update", HEADER.pack(4, 0x2800, 1, 0, 0, 0) + origin + b"\x00\x06\x00\x01"
    yield "truncated", (origin + b"\x00\xfc")[:9]


def notify_replies() -> Seeds:
    """What secondaries answer to a NOTIFY (and what else may arrive on that socket)."""
    sys.path.insert(0, str(HERE))
    import rpz_notify_reply as h

    for name, sent in (("plain", h.PLAIN), ("signed", h.SIGNED)):
        for rcode in (dns.rcode.NOERROR, dns.rcode.NOTAUTH, dns.rcode.REFUSED, dns.rcode.FORMERR):
            r = dns.message.make_response(sent)
            r.set_rcode(rcode)
            yield f"{name}-{dns.rcode.to_text(rcode).lower()}", r.to_wire()
        r = dns.message.make_response(sent)
        r.id ^= 1
        yield f"{name}-other-id", r.to_wire()
        r = dns.message.make_response(sent)
        r.set_opcode(dns.opcode.QUERY)
        yield f"{name}-opcode-query", r.to_wire()
        yield f"{name}-echo-of-notify", sent.to_wire()
    r = dns.message.make_response(h.PLAIN)
    r.use_tsig(dns.tsig.Key(dns.name.from_text(TSIG_NAME), b"z" * 32, "hmac-sha256"))
    yield "signed-with-other-secret", r.to_wire()
    r = dns.message.make_response(h.PLAIN)
    r.use_edns(0, 0, 1232)
    yield "plain-edns", r.to_wire()
    yield "header-only", HEADER.pack(h.QUERY_ID, 0xA000, 0, 0, 0, 0)
    yield "short", b"\x2a\x2a\xa0"


def _task(kind: str = "restrict", **over: Any) -> dict[str, Any]:
    common: dict[str, Any] = dict(
        iss="mci",
        id="2026-11-22-0001",
        seq=42,
        authority="Ministry of Culture and Information",
        number="04-1/123",
        date="2026-11-20",
        issued_at=NOW,
    )
    if kind == "restrict":
        task = new_task(
            type="restrict",
            **common,
            targets=[("domain", "example.kz"), ("ip", "192.0.2.1"), ("cidr", "10.0.0.0/24")],
            ground="Law On Communications, art. 41-1",
            reason="illegal_content",
        )
    else:
        task = new_task(
            type="resume",
            **common,
            applicant="owner of example.kz",
            removed_links=["https://example.kz/a"],
            removed_as_of="2026-11-30",
        )
    for key, value in over.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    return task


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def payloads() -> Seeds:
    """Task payloads (the JSON a regulator signs): valid ones and one fault each."""
    t = lambda kind, value: {"type": kind, "value": value}  # noqa: E731
    yield "restrict", _json(_task())
    yield "resume", _json(_task("resume"))
    yield (
        "restrict-every-kind",
        _json(
            _task(
                targets=[
                    t("domain", "Пример.KZ."),
                    t("domain", "xn--80ak6aa92e.kz"),
                    t("ip", "2001:DB8::1"),
                    t("cidr", "2001:db8::/32"),
                    t("cidr", "10.1.2.3/8"),
                    t("app", "kz.example.app"),
                    t("url", "HTTPS://user:pw@WWW.Example.kz:8443/p?q=1#f"),
                    t("url", "http://[2001:db8::1]/"),
                    t("url", "http://192.0.2.1:80/x"),
                    t("domain", "example.kz"),
                    t("domain", "example.kz"),
                ]
            )
        ),
    )
    yield (
        "resume-many-links",
        _json(
            _task(
                "resume",
                removed_links=[
                    "https://example.kz/a",
                    "http://Пример.kz/b",
                    "https://example.kz:0/",
                    "http://[::1]:65535/",
                ],
            )
        ),
    )
    yield "aud-this-operator", _json(_task(aud=["op-kz-1", "op-kz-2"]))
    yield "aud-other-operator", _json(_task(aud=["op-kz-2"]))
    yield "iss-sts", _json(_task(iss="sts"))
    yield "timestamp-leap-second", _json(_task(issued_at="2026-12-31T23:59:60.123456789Z"))
    yield "timestamp-lower-case", _json(_task(issued_at="2026-11-22t10:15:00z"))
    yield "timestamp-offset-out-of-range", _json(_task(issued_at="2026-11-22T10:15:00+24:00"))
    yield "timestamp-naive", _json(_task(issued_at="2026-11-22T10:15:00"))
    yield "date-feb-30", _json(_task(instruction={"number": "1", "date": "2026-02-30"}))
    yield "date-year-0", _json(_task(instruction={"number": "1", "date": "0000-01-01"}))
    yield (
        "instruction-extra-field",
        _json(_task(instruction={"number": "1", "date": "2026-11-20", "x": 1})),
    )
    yield "v2", _json(_task(v=2))
    yield "v-true", _json(_task(v=True))
    yield "seq-zero", _json(_task(seq=0))
    yield "seq-2-63", _json(_task(seq=2**63))
    yield "seq-bool", _json(_task(seq=True))
    yield "seq-float", _json(_task(seq=1.0))
    yield "id-bad-chars", _json(_task(id="a b"))
    yield "unknown-field", _json(_task(extra="x"))
    yield "restrict-with-applicant", _json(_task(applicant="x"))
    yield "reason-unknown", _json(_task(reason="because"))
    yield "ground-control-char", _json(_task(ground="line\nbreak"))
    yield "ground-blank", _json(_task(ground="   "))
    yield "ground-nel", _json(_task(ground="line\x85break"))
    yield "authority-line-separator", _json(_task(authority="a\u2028b"))
    yield "number-c1-csi", _json(_task(instruction={"number": "1\x9b31m", "date": "2026-11-20"}))
    yield "url-paragraph-separator", _json(_task(targets=[t("url", "https://a.kz/\u2029x")]))
    yield "targets-empty", _json(_task(targets=[]))
    yield "target-bad-type", _json(_task(targets=[t("asn", "AS1")]))
    yield "target-three-keys", _json(_task(targets=[{"type": "ip", "value": "1.2.3.4", "x": 1}]))
    yield "target-ip-zone", _json(_task(targets=[t("ip", "fe80::1%eth0")]))
    yield "target-domain-digits", _json(_task(targets=[t("domain", "example.123")]))
    yield "target-domain-too-long", _json(_task(targets=[t("domain", LONG_255 + ".kz")]))
    yield "target-url-bad-port", _json(_task(targets=[t("url", "http://example.kz:99999/")]))
    yield "target-url-no-host", _json(_task(targets=[t("url", "http:///path")]))
    yield "target-url-tab", _json(_task(targets=[t("url", "http://example.kz/\t")]))
    yield "target-app-no-dot", _json(_task(targets=[t("app", "app")]))
    yield "resume-links-not-list", _json(_task("resume", removed_links="https://example.kz/"))
    yield "resume-no-removed-as-of", _json(_task("resume", removed_as_of=None))
    yield "duplicate-key", _json(_task())[:-1] + b',"seq":43}'
    yield "not-an-object", b'["v", 1]'
    yield "number-1e999", _json(_task())[:-1] + b',"x":1e999}'


def json_texts() -> Seeds:
    """Strict JSON: accepted objects and every refusal the reader documents."""
    yield "object", b'{"a": [1, 2.5, -0, 1e3, true, false, null], "b": {"c": "d\\u00e9"}}'
    yield "task", _json(_task())
    yield "unicode", '{"ключ": "значение", "emoji": "\\ud83d\\ude00 😀"}'.encode()
    yield "whitespace", b' \t\r\n{ "a" : 1 } \n'
    yield "empty", b"{}"
    yield "duplicate-key", b'{"a": 1, "a": 2}'
    yield "duplicate-nested", b'{"a": {"b": 1, "b": 1}}'
    yield "nan", b'{"a": NaN}'
    yield "infinity", b'{"a": -Infinity}'
    yield "overflow-1e999", b'{"a": 1e999}'
    yield "lone-surrogate", b'{"a": "\\ud800"}'
    yield "lone-low-surrogate-key", b'{"\\uDC00": 1}'
    yield "escaped-backslash-u", b'{"a": "\\\\ud800"}'
    yield "bom", b'\xef\xbb\xbf{"a": 1}'
    yield "invalid-utf8", b'{"a": "\xff"}'
    yield "overlong-utf8", b'{"a": "\xc0\xaf"}'
    yield "raw-surrogate-utf8", b'{"a": "\xed\xa0\x80"}'
    yield "big-int-4301-digits", b'{"a": ' + b"9" * 4301 + b"}"
    yield "deep-nesting", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    yield "top-level-array", b"[1]"
    yield "top-level-string", b'"x"'
    yield "trailing-comma", b'{"a": 1,}'
    yield "trailing-data", b'{"a": 1} x'
    yield "single-quotes", b"{'a': 1}"
    yield "control-in-string", b'{"a": "\x01"}'
    yield "nul", b'{"a": 1}\x00'


def jws_bodies() -> Seeds:
    """Request bodies: real signed tasks and the near misses intake must refuse."""
    payload = _json(_task())
    good = sign(payload)
    head, body, sig = good.split(b".")

    def hdr(**fields: Any) -> bytes:
        return b64url_encode(_json(fields)).encode()

    yield "restrict", good
    yield "resume", sign(_json(_task("resume")))
    yield "restrict-newline", good + b"\r\n"
    yield (
        "sts-key-claims-mci",
        sign(payload, {"alg": "EdDSA", "kid": STS_KID, "typ": "kzgate-task+json"}, STS_KEY),
    )
    yield (
        "alg-ed25519",
        sign(payload, {"alg": "Ed25519", "kid": "fuzz-mci-1", "typ": "kzgate-task+json"}),
    )
    for label, fields in (
        ("alg-none", {"alg": "none", "kid": "fuzz-mci-1", "typ": "kzgate-task+json"}),
        ("alg-hs256", {"alg": "HS256", "kid": "fuzz-mci-1", "typ": "kzgate-task+json"}),
        ("alg-missing", {"kid": "fuzz-mci-1", "typ": "kzgate-task+json"}),
        ("kid-missing", {"alg": "EdDSA", "typ": "kzgate-task+json"}),
        ("kid-unknown", {"alg": "EdDSA", "kid": "nobody", "typ": "kzgate-task+json"}),
        ("kid-expired", {"alg": "EdDSA", "kid": "fuzz-old", "typ": "kzgate-task+json"}),
        ("kid-revoked", {"alg": "EdDSA", "kid": "fuzz-revoked", "typ": "kzgate-task+json"}),
        ("kid-too-long", {"alg": "EdDSA", "kid": "k" * 257, "typ": "kzgate-task+json"}),
        ("typ-missing", {"alg": "EdDSA", "kid": "fuzz-mci-1"}),
        (
            "crit",
            {
                "alg": "EdDSA",
                "kid": "fuzz-mci-1",
                "typ": "kzgate-task+json",
                "crit": ["b64"],
                "b64": False,
            },
        ),
        (
            "jwk-ignored",
            {
                "alg": "EdDSA",
                "kid": "fuzz-mci-1",
                "typ": "kzgate-task+json",
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            },
        ),
    ):
        yield label, sign(payload, fields)
    yield "signature-of-other-payload", head + b"." + body + b"." + sign(b"{}").split(b".")[2]
    yield "signature-short", head + b"." + body + b"." + sig[:40]
    yield "padding", head + b"=." + body + b"." + sig
    yield "bad-character", head + b"." + body + b"+." + sig
    yield "non-canonical-bits", head + b"." + body + b"." + sig[:-1] + b"B"
    yield "impossible-length", head + b"." + body + b"A." + sig
    yield "two-parts", head + b"." + body
    yield "four-parts", good + b"." + sig
    yield "empty-header", b"." + body + b"." + sig
    yield "header-not-json", b64url_encode(b"not json").encode() + b"." + body + b"." + sig
    yield "header-array", b64url_encode(b"[]").encode() + b"." + body + b"." + sig
    yield (
        "header-duplicate-alg",
        b64url_encode(b'{"alg":"EdDSA","alg":"none","kid":"fuzz-mci-1"}').encode()
        + b"."
        + body
        + b"."
        + sig,
    )
    yield "empty", b""
    yield "hdr-only-fields", hdr(alg="EdDSA") + b".."


def feed_task_lists() -> Seeds:
    """Bodies of a feed's GET /tasks (task-protocol.md §6): the shape, and every way off it."""
    jws = [body for _, body in jws_bodies()][:3]
    yield "empty-list", b'{"tasks": []}'
    yield "three", b'{"tasks": [' + b", ".join(b'"' + j + b'"' for j in jws) + b"]}"
    yield "compact", b'{"tasks":["a.b.c"]}'
    yield "unicode-string", '{"tasks": ["я\\u00e9"]}'.encode()
    yield "not-object", b'["a.b.c"]'
    yield "no-tasks", b"{}"
    yield "extra-key", b'{"tasks": [], "next": 2}'
    yield "tasks-object", b'{"tasks": {"1": "a.b.c"}}'
    yield "tasks-string", b'{"tasks": "a.b.c"}'
    yield "number-entry", b'{"tasks": [1]}'
    yield "null-entry", b'{"tasks": [null]}'
    yield "nested-list", b'{"tasks": [["a.b.c"]]}'
    yield "duplicate-key", b'{"tasks": [], "tasks": ["a.b.c"]}'
    yield "nan", b'{"tasks": [NaN]}'
    yield "lone-surrogate", b'{"tasks": ["\\ud800"]}'
    yield "bom", b'\xef\xbb\xbf{"tasks": []}'
    yield "invalid-utf8", b'{"tasks": ["\xff"]}'
    yield "html", b"<html><body>Service unavailable</body></html>"
    yield "truncated", b'{"tasks": ["a.b'
    yield "empty", b""


def route_datagrams() -> Seeds:
    """rtnetlink datagrams: our own messages, a real dump (test_routes_wire.py), acks, damage."""
    import ipaddress

    from kzgate.enforce.routes.encode import add, delete, dump_request

    v4, v6 = ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("2001:db8::/48")
    yield "add-v4", add(1, v4, 666, 252, 6)
    yield "add-v6", add(2, v6, 666, 252, 8)
    yield "delete-v4", delete(3, v4, 666, 252, 6)
    yield "delete-v6", delete(4, v6, 666, 252, 7)
    yield "default-v4", add(5, ipaddress.ip_network("0.0.0.0/0"), 666, 252, 6)[:36]
    yield "host-v6", add(6, ipaddress.ip_network("2001:db8::1/128"), 2**32 - 1, 255, 6)
    yield "batch", b"".join(add(i, v4, 666, 252, 6) for i in range(8))
    yield "dump-request", dump_request(7, 2, 666, 252)
    dump = bytes.fromhex(
        "740000001800220001000000462a00000a300000fcfc00060000000008000f009a020000"
        "1400010020010db800000000000000000000000008000600000400000800040001000000"
        "24000c00000000000000000000000000000000000000000000000000000000000000000005001400000000"
        "00140000000300220001000000462a000000000000"
    )
    yield "dump-v6", dump
    yield "done", struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)
    ack = struct.pack("=IHHIIi", 36, 2, 0x100, 9, 0, 0) + struct.pack("=IHHII", 44, 24, 5, 9, 0)
    yield "ack", ack
    err = struct.pack("=IHHIIi", 36, 2, 0x100, 9, 0, -3) + struct.pack("=IHHII", 44, 25, 5, 9, 0)
    yield "error-esrch", err
    msg = add(1, v4, 666, 252, 6)
    yield "truncated", msg[:30]
    yield "dst-len-33", msg[:17] + b"\x21" + msg[18:]
    yield "host-bits", msg[:17] + b"\x10" + msg[18:]
    yield "family-7", msg[:16] + b"\x07" + msg[17:]
    yield "attr-zero-length", msg[:28] + b"\x00\x00\x0f\x00" + msg[32:]
    yield "empty", b""


def probe_replies() -> Seeds:
    """What resolvers answer a probe: a control octet (see probe_dns_reply.py), then the reply."""
    blocked, nx, sink, nodata, refused = 1, 0, 2, 4, 6
    good = query("example.kz")
    sub = query("kzgate-probe-0a1b2c3d.example.kz")
    soa = "rpz.kzgate. 60 IN SOA localhost. hostmaster.rpz.kzgate. 1 3600 600 86400 60"
    yield "nxdomain-blocked", bytes([blocked | nx]) + reply(good, rcode=3, auth=soa)
    yield "nxdomain-open", bytes([nx]) + reply(good, rcode=3)
    yield "nxdomain-where-sinkhole", bytes([blocked | sink]) + reply(good, rcode=3)
    yield "subdomain-nxdomain", bytes([blocked | nx]) + reply(sub, rcode=3)
    yield "real-answer", bytes([nx]) + reply(good, "example.kz. 300 IN A 203.0.113.5")
    yield "sinkhole-a", bytes([blocked | sink]) + reply(good, "example.kz. 60 IN A 192.0.2.1")
    aaaa = query("example.kz", "AAAA")
    yield (
        "sinkhole-aaaa",
        bytes([blocked | sink]) + reply(aaaa, "example.kz. 60 IN AAAA 2001:db8::1"),
    )
    yield (
        "cname-chain",
        bytes([nx])
        + reply(
            good, "example.kz. 60 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN A 1.2.3.4"
        ),
    )
    yield "nodata", bytes([blocked | nodata]) + reply(good, auth=soa)
    yield "refused", bytes([blocked | refused]) + reply(good, rcode=5)
    yield "servfail", bytes([nx]) + reply(good, rcode=2)
    yield "other-question", bytes([nx]) + reply(query("other.kz"), rcode=3)
    yield "not-a-reply", bytes([nx]) + HEADER.pack(0x77, 0x0100, 1, 0, 0, 0) + QUESTION
    many = [f"example.kz. 300 IN A 192.0.2.{i}" for i in range(1, 121)]
    yield "many-records", bytes([blocked | sink]) + reply(good, *many)
    head = HEADER.pack(0x77, 0x8180, 1, 1, 0, 0) + QUESTION
    yield "cname-pointer-loop", bytes([nx]) + head + _rr(5, b"\xc0" + bytes([12 + len(QUESTION)]))
    yield "count-lie", bytes([nx]) + HEADER.pack(0x77, 0x8180, 1, 5, 0, 0) + QUESTION
    yield "header-only", bytes([nx]) + HEADER.pack(0x77, 0x8180, 0, 0, 0, 0)
    yield "short", bytes([nx]) + b"\x00\x77\x81"
    yield "empty-reply", bytes([blocked])


WRITERS: dict[str, Callable[[], Seeds]] = {
    "dns_wire_query": queries,
    "dns_engine_query": queries,
    "dns_upstream_reply": replies,
    "rpz_xfr_query": xfr_queries,
    "rpz_notify_reply": notify_replies,
    "jws_compact": jws_bodies,
    "task_jws": jws_bodies,
    "task_signed": payloads,
    "json_strict": json_texts,
    "feed_tasks": feed_task_lists,
    "routes_decode": route_datagrams,
    "probe_dns_reply": probe_replies,
}


def main() -> None:
    for harness, seeds in WRITERS.items():
        directory = CORPUS / harness
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        names = set()
        for label, data in seeds():
            assert label not in names, (harness, label)
            names.add(label)
            (directory / f"seed-{label.replace('/', '_').replace(' ', '_')}").write_bytes(data)
        print(f"{harness}: {len(names)} seeds")


if __name__ == "__main__":
    main()

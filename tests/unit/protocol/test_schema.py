"""The task schema (task-protocol.md §3): values normalized, every error names its field."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from kzgate.errors import InvalidTask
from kzgate.model import InstructionRef, Target, Task
from kzgate.protocol.schema import parse_task
from tests.support.protocol_fixtures import restrict, resume


def parse(obj: dict[str, Any]) -> Task:
    payload = json.dumps(obj, ensure_ascii=False).encode()
    return parse_task(obj, payload, "mci-1")


def refused(obj: dict[str, Any]) -> str:
    with pytest.raises(InvalidTask) as err:
        parse(obj)
    assert err.value.status == 422
    return err.value.detail


def with_targets(*targets: tuple[Any, Any]) -> dict[str, Any]:
    return restrict(targets=[{"type": t, "value": v} for t, v in targets])


def test_valid_restrict() -> None:
    obj = restrict()
    payload = json.dumps(obj).encode()
    task = parse_task(obj, payload, "mci-1")
    assert task.v == 1
    assert (task.iss, task.id, task.seq, task.type, task.kid) == (
        "mci",
        "2026-11-22-0001",
        42,
        "restrict",
        "mci-1",
    )
    assert task.aud == ("*",)
    assert task.issued_at == dt.datetime(2026, 11, 22, 5, 15, tzinfo=dt.UTC)
    assert task.issued_at.utcoffset() == dt.timedelta(hours=5)
    assert task.instruction == InstructionRef("mci", "04-1/123", "2026-11-20")
    assert task.ground == "Law On Communications, art. 41-1"
    assert task.reason == "illegal_content"
    assert task.targets == (
        Target("domain", "example.kz"),
        Target("ip", "192.0.2.1"),
        Target("cidr", "10.0.0.0/24"),
    )
    assert task.payload is payload
    assert task.sha256 == hashlib.sha256(payload).hexdigest()
    assert task.applicant is None and task.removed_links == () and task.removed_as_of is None


def test_valid_resume() -> None:
    task = parse(resume())
    assert task.type == "resume"
    assert task.applicant == "owner of example.kz"
    assert task.removed_links == ("https://example.kz/a", "https://example.kz/b")
    assert task.removed_as_of == dt.date(2026, 11, 30)
    assert task.targets == () and task.ground is None and task.reason is None


def test_resume_with_no_links_is_valid() -> None:
    assert parse(resume(removed_links=[])).removed_links == ()


def test_reason_is_optional() -> None:
    assert parse(restrict(reason=None)).reason is None


def test_targets_are_normalized_and_duplicates_collapse_in_first_order() -> None:
    task = parse(
        with_targets(
            ("domain", "Мысал.ҚАЗ."),
            ("ip", "2001:DB8::0:1"),
            ("domain", "xn--80awbu3c.xn--80ao21a"),
            ("domain", "EXAMPLE.kz"),
            ("ip", "2001:db8::1"),
            ("cidr", "2001:DB8::/32"),
            ("url", "HTTPS://Мысал.ҚАЗ/Path?Q=1#Frag"),
            ("url", "http://192.0.2.1:8080/x"),
            ("url", "http://[2001:DB8::1]/x"),
            ("url", "http://user@Example.KZ:81"),
            ("app", "kz.Example.App"),
            ("domain", "example.kz"),
        )
    )
    assert [(t.kind, t.value) for t in task.targets] == [
        ("domain", "xn--80awbu3c.xn--80ao21a"),
        ("ip", "2001:db8::1"),
        ("domain", "example.kz"),
        ("cidr", "2001:db8::/32"),
        ("url", "https://xn--80awbu3c.xn--80ao21a/Path?Q=1#Frag"),
        ("url", "http://192.0.2.1:8080/x"),
        ("url", "http://[2001:DB8::1]/x"),
        ("url", "http://user@example.kz:81"),
        ("app", "kz.Example.App"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T10:15:00Z", dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-22t10:15:00z", dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.UTC)),
        ("2026-11-22T10:15:00.5-03:30", dt.datetime(2026, 11, 22, 13, 45, 0, 500000, dt.UTC)),
        ("2026-11-22T10:15:00.1234567+00:00", dt.datetime(2026, 11, 22, 10, 15, 0, 123456, dt.UTC)),
        ("2016-12-31T23:59:60Z", dt.datetime(2016, 12, 31, 23, 59, 59, 999999, dt.UTC)),
    ],
)
def test_issued_at_accepts_rfc3339(text: str, expected: dt.datetime) -> None:
    assert parse(restrict(issued_at=text)).issued_at == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T10:15:00",  # naive
        "2026-11-22 10:15:00Z",
        "2026-11-22",
        "2026-11-22T10:15Z",
        "2026-13-22T10:15:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T10:15:00+24:00",
        "2026-11-22T10:15:00+0500",
        "2026-11-22T10:15:00.Z",
        "٢٠٢٦-11-22T10:15:00Z",  # Arabic-Indic digits: RFC 3339 is ASCII only
        "２０２６-11-22T10:15:00Z",  # fullwidth digits
        1_700_000_000,
    ],
)
def test_issued_at_refuses(text: Any) -> None:
    assert refused(restrict(issued_at=text)).startswith("issued_at: ")


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"v": 2}, "v: unsupported protocol version 2"),
        ({"v": True}, "v: unsupported protocol version True"),
        ({"v": "1"}, "v: unsupported protocol version '1'"),
        ({"v": 1.0}, "v: unsupported protocol version 1.0"),
        ({"v": None}, "v: required"),
        ({"extra": 1}, "extra: unknown field"),
        ({"id": "a b"}, "id: required: 1-128 characters"),
        ({"id": ""}, "id: required: 1-128 characters"),
        ({"id": "x" * 129}, "id: required: 1-128 characters"),
        ({"id": 7}, "id: required: 1-128 characters"),
        ({"iss": ""}, "iss: must not be empty"),
        ({"iss": None}, "iss: required"),
        ({"aud": []}, "aud: must name at least one operator"),
        ({"aud": "*"}, "aud: expected a list, got string"),
        ({"aud": ["*", 3]}, "aud[1]: expected a non-empty string"),
        ({"seq": 0}, "seq: must be an integer >= 1"),
        ({"seq": -1}, "seq: must be an integer >= 1"),
        ({"seq": True}, "seq: must be an integer >= 1"),
        ({"seq": "1"}, "seq: must be an integer >= 1"),
        ({"seq": 1.0}, "seq: must be an integer >= 1"),
        ({"seq": 2**63}, "seq: must be an integer >= 1"),
        ({"seq": None}, "seq: required"),
        ({"type": "block"}, "type: must be 'restrict' or 'resume'"),
        ({"authority": "  "}, "authority: must not be empty"),
        ({"authority": "MCI\nX"}, "authority: must not contain control characters"),
        ({"authority": ["MCI"]}, "authority: expected a string, got array"),
        ({"instruction": None}, "instruction: required"),
        ({"instruction": []}, "instruction: expected an object, got array"),
        ({"instruction": {"number": "1"}}, "instruction.date: required"),
        ({"instruction": {"date": "2026-11-20"}}, "instruction.number: required"),
        (
            {"instruction": {"number": "1", "date": "20.11.2026"}},
            "instruction.date: expected YYYY-MM-DD",
        ),
        (
            {"instruction": {"number": "1", "date": "2026-02-30"}},
            "instruction.date: not a calendar date",
        ),
        (
            {"instruction": {"number": "1", "date": "2026-11-20", "x": 1}},
            "instruction.x: unknown field",
        ),
        ({"ground": None}, "ground: required"),
        ({"reason": "dislike"}, "reason: must be one of false_registrant_data"),
        ({"targets": None}, "targets: required"),
        ({"targets": []}, "targets: must hold 1 to 100000 items, got 0"),
        ({"targets": {"type": "ip"}}, "targets: expected a list, got object"),
        ({"applicant": "someone"}, "applicant: not allowed in a restrict task"),
        ({"removed_links": []}, "removed_links: not allowed in a restrict task"),
        ({"removed_as_of": "2026-11-30"}, "removed_as_of: not allowed in a restrict task"),
    ],
)
def test_restrict_refusals_name_the_field(overrides: dict[str, Any], detail: str) -> None:
    obj = restrict()
    obj.update(overrides)
    obj = {k: v for k, v in obj.items() if v is not None}
    assert refused(obj).startswith(detail)


def test_reason_null_is_refused() -> None:
    obj = restrict()
    obj["reason"] = None
    assert refused(obj).startswith("reason: must be one of")


def test_too_many_targets() -> None:
    obj = with_targets(*[("ip", "192.0.2.1")] * 100_001)
    assert refused(obj) == "targets: must hold 1 to 100000 items, got 100001"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"applicant": None}, "applicant: required"),
        ({"removed_links": None}, "removed_links: required"),
        ({"removed_links": ["https://ok.kz/", "ftp://x.kz/"]}, "removed_links[1]: not an absolute"),
        ({"removed_links": [1]}, "removed_links[0]: expected a string, got number"),
        ({"removed_as_of": None}, "removed_as_of: required"),
        ({"removed_as_of": "2026-11-31"}, "removed_as_of: not a calendar date"),
        ({"removed_as_of": "30.11.2026"}, "removed_as_of: expected YYYY-MM-DD"),
        ({"targets": [{"type": "ip", "value": "192.0.2.1"}]}, "targets: not allowed in a resume"),
        ({"ground": "x"}, "ground: not allowed in a resume task"),
        ({"reason": "other"}, "reason: not allowed in a resume task"),
    ],
)
def test_resume_refusals_name_the_field(overrides: dict[str, Any], detail: str) -> None:
    obj = resume()
    obj.update(overrides)
    obj = {k: v for k, v in obj.items() if v is not None}
    assert refused(obj).startswith(detail)


@pytest.mark.parametrize(
    ("kind", "value", "detail"),
    [
        ("domain", "bad_name.kz", "not a valid domain name"),
        ("domain", "-lead.kz", "not a valid domain name"),
        ("domain", "a..kz", "not a valid domain name"),
        ("domain", "x" * 64 + ".kz", "Label too long"),
        ("domain", "", "empty domain name"),
        ("domain", "192.0.2.1", "is not a domain name (use type 'ip'"),
        ("ip", "192.0.2.256", "not an IPv4 or IPv6 address"),
        ("ip", "10.0.0.0/8", "not an IPv4 or IPv6 address"),
        ("ip", "fe80::1%eth0", "zone index is not allowed"),
        ("ip", "010.0.0.1", "not an IPv4 or IPv6 address"),
        ("cidr", "10.0.0.5/24", "has host bits set"),
        ("cidr", "2001:db8::1/32", "has host bits set"),
        ("cidr", "10.0.0.0", "has no length"),
        ("cidr", "10.0.0.0/33", "not a valid prefix"),
        ("url", "example.kz/page", "not an absolute http(s) URL"),
        ("url", "ftp://example.kz/", "not an absolute http(s) URL"),
        ("url", "http:example.kz", "not an absolute http(s) URL"),
        ("url", "http:///path", "URL has no host"),
        ("url", "http://exa mple.kz/", "whitespace or control characters"),
        ("url", "http://example.kz/\tx", "whitespace or control characters"),
        ("url", "http://example.kz:99999/", "not a valid URL"),
        ("url", "http://bad_host.kz/", "not a valid domain name"),
        ("url", "http://[2001:db8::zz]/", "not a valid URL"),
        ("url", "http://192.0.2.999/", "999"),
        ("url", "http://example.123/", "'example.123'"),
        ("url", "http://example.kz/" + "a" * 8200, "URL of 8218 characters"),
        ("app", "noDots", "not an application id"),
        ("app", "kz.exa mple", "not an application id"),
        ("app", "kz." + "a" * 253, "application id of 256 characters (255 allowed)"),
    ],
)
def test_bad_target_values_name_the_index(kind: str, value: str, detail: str) -> None:
    obj = with_targets(("ip", "192.0.2.1"), ("domain", "ok.kz"), (kind, value))
    message = refused(obj)
    assert message.startswith("targets[2].value: "), message
    assert detail in message


@pytest.mark.parametrize(
    ("item", "detail"),
    [
        ({"type": "asn", "value": "AS1"}, "targets[1].type: unknown target type 'asn'"),
        ({"type": ["ip"], "value": "1.1.1.1"}, "targets[1].type: unknown target type"),
        ({"type": "ip", "value": 16843009}, "targets[1].value: expected a string, got number"),
        ({"type": "ip"}, "targets[1]: expected exactly"),
        ({"type": "ip", "value": "1.1.1.1", "note": "x"}, "targets[1]: expected exactly"),
        (["ip", "1.1.1.1"], "targets[1]: expected exactly"),
    ],
)
def test_bad_target_items(item: Any, detail: str) -> None:
    obj = restrict(targets=[{"type": "ip", "value": "192.0.2.1"}, item])
    assert refused(obj).startswith(detail)


def test_app_ids_at_the_limit() -> None:
    value = "kz." + "a" * 252
    task = parse(with_targets(("app", value)))
    assert task.targets == (Target("app", value),)


@pytest.mark.parametrize("date", ["٢٠٢٦-١١-٠١", "２０２６-11-01"])
def test_instruction_date_is_ascii_only(date: str) -> None:
    task = restrict()
    task["instruction"] = dict(task["instruction"], date=date)
    assert refused(task).startswith("instruction.date: ")


# -- length limits of the text fields (issue 10: a 1 MB number and an 8 MB ground were stored)


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    if path == "instruction.number":
        obj["instruction"] = dict(obj["instruction"], number=value)
    elif path == "aud[0]":
        obj["aud"] = [value]
    else:
        obj[path] = value
    return obj


@pytest.mark.parametrize(
    ("path", "limit", "build"),
    [
        ("iss", 128, restrict),
        ("aud[0]", 128, restrict),
        ("authority", 512, restrict),
        ("instruction.number", 64, restrict),
        ("ground", 1024, restrict),
        ("applicant", 512, resume),
    ],
)
def test_text_fields_have_a_length_limit(path: str, limit: int, build: Any) -> None:
    # Characters, not octets: a Cyrillic text at the limit is twice as many UTF-8 octets.
    at_limit = ("№" + "Қ" * (limit - 1)) if path != "iss" else "m" * limit
    task = parse(_set(build(), path, at_limit))
    kept = {task.iss, task.aud[0], task.authority, task.instruction.number, task.ground}
    assert at_limit in kept | {task.applicant}
    detail = refused(_set(build(), path, at_limit + "x"))
    assert detail == f"{path}: at most {limit} characters, got {limit + 1}"
    # a megabyte is refused the same way, before anything else looks at it
    huge = refused(_set(build(), path, "\x00" * 1_000_000))
    assert huge == f"{path}: at most {limit} characters, got 1000000"


def test_list_fields_have_a_count_limit() -> None:
    assert refused(restrict(aud=["op"] * 1001)) == "aud: at most 1000 items, got 1001"
    assert parse(restrict(aud=[f"op{i}" for i in range(1000)])).aud[-1] == "op999"
    links = ["https://example.kz/a"] * 100_001
    assert refused(resume(removed_links=links)) == "removed_links: at most 100000 items, got 100001"


def test_urls_up_to_8_kib_are_kept_whole() -> None:
    value = "https://example.kz/" + "a" * (8192 - 19)
    assert len(value) == 8192
    assert parse(with_targets(("url", value))).targets == (Target("url", value),)
    assert parse(resume(removed_links=[value])).removed_links == (value,)
    assert refused(resume(removed_links=[value + "a"])).startswith(
        "removed_links[0]: URL of 8193 characters (8192 allowed)"
    )

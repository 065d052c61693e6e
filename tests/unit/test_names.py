"""kzgate.names: one canonical form per domain, address and prefix."""

from __future__ import annotations

import idna
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kzgate.names import NameError_, normalize_cidr, normalize_domain, normalize_ip


@pytest.mark.parametrize(
    "name",
    [
        "Мысал.ҚАЗ.",
        "мысал.қаз",
        "МЫСАЛ.ҚАЗ",
        "xn--80awbu3c.xn--80ao21a",
        "XN--80AWBU3C.XN--80AO21A.",
        "мысал。қаз",  # ideographic full stop, mapped by UTS #46
    ],
)
def test_the_kaz_idn_has_one_form(name: str) -> None:
    assert normalize_domain(name) == "xn--80awbu3c.xn--80ao21a"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example.KZ", "example.kz"),
        ("example.kz.", "example.kz"),
        ("a-b.kz", "a-b.kz"),
        ("1.kz", "1.kz"),
        ("faß.de", "xn--fa-hia.de"),  # non-transitional: ß is kept, not mapped to "ss"
        ("x" * 63 + ".kz", "x" * 63 + ".kz"),
        (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),
    ],
)
def test_normalize_domain(name: str, expected: str) -> None:
    assert normalize_domain(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "a..kz",
        ".kz",
        "x" * 64 + ".kz",  # label over 63
        ".".join(["a" * 63] * 3 + ["b" * 62]),  # 254 octets
        ".".join(["a" * 63] * 4),  # 255 octets
        "-a.kz",
        "a-.kz",
        "ab--c.kz",  # reserved hyphens in positions 3-4
        "xn--.kz",
        "xn--zz.kz",  # not valid punycode
        "under_score.kz",
        "sp ace.kz",
        "*.kz",
        "мысал.қаз" + ".a" * 120,  # over 253 only after encoding
    ],
)
def test_normalize_domain_refuses(name: str) -> None:
    with pytest.raises(NameError_):
        normalize_domain(name)


def _reference(name: str) -> str | None:
    """What the idna package says (UTS #46 non-transitional), with our length rules."""
    try:
        out = idna.encode(name, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None
    out = out.removesuffix(".")
    if not out or len(out) > 253 or any(not 1 <= len(label) <= 63 for label in out.split(".")):
        return None
    return out


_LABEL_CHARS = st.sampled_from("abcxyzABCXYZ0189-_ßäқҚ")
_LABEL = st.one_of(
    st.text(_LABEL_CHARS, min_size=0, max_size=8),
    st.text(_LABEL_CHARS, min_size=60, max_size=66),
    st.builds(lambda s: "xn--" + s, st.text(st.sampled_from("abc0189-z"), max_size=10)),
    st.builds(
        lambda a, b: a + "--" + b,
        st.text(_LABEL_CHARS, max_size=3),
        st.text(_LABEL_CHARS, max_size=3),
    ),
    st.sampled_from(["xn--80awbu3c", "xn--80ao21a", "XN--80AO21A", "-", "a-", "-a", "1"]),
)
_NAME = st.builds(
    lambda labels, dot: ".".join(labels) + dot,
    st.lists(_LABEL, min_size=1, max_size=6),
    st.sampled_from(["", "."]),
)


@settings(max_examples=2000, deadline=None)
@given(_NAME)
@example("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61)
@example("xn--80awbu3c.XN--80AO21A.")
@example("ab--cd.kz")
@example("xn--a.kz")
def test_normalize_domain_agrees_with_idna(name: str) -> None:
    expected = _reference(name)
    if expected is None:
        with pytest.raises(NameError_):
            normalize_domain(name)
    else:
        assert normalize_domain(name) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2001:DB8::0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::FFFF:192.0.2.1", "::ffff:c000:201"),
        ("192.0.2.1", "192.0.2.1"),
    ],
)
def test_normalize_ip(value: str, expected: str) -> None:
    assert normalize_ip(value) == expected


@pytest.mark.parametrize("value", ["192.0.2.256", "192.0.2", "010.0.0.1", "1.2.3.4/32", "", "x"])
def test_normalize_ip_refuses(value: str) -> None:
    with pytest.raises(NameError_):
        normalize_ip(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/24", "10.0.0.0/24"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("192.0.2.1/32", "192.0.2.1/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_normalize_cidr(value: str, expected: str) -> None:
    assert normalize_cidr(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10.0.0.5/24", "host bits set"),
        ("2001:db8::1/32", "host bits set"),
        ("10.0.0.0", "has no length"),
        ("10.0.0.0/33", "not a valid prefix"),
        ("10.0.0.0/-1", "not a valid prefix"),
    ],
)
def test_normalize_cidr_refuses(value: str, why: str) -> None:
    with pytest.raises(NameError_, match=why):
        normalize_cidr(value)

"""Normalization of domain names and IP prefixes, used everywhere a name is stored or matched.

Domains: IDNA UTS #46 (non-transitional), lower case, no trailing dot, labels of
1-63 octets, whole name at most 253. Plain LDH names take a fast path that is
checked against the ``idna`` package in the tests; everything else goes through it.
"""

from __future__ import annotations

import ipaddress
import re

import idna

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# Full stops that UTS #46 maps to "." (ideographic, fullwidth, halfwidth).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class NameError_(ValueError):
    """A domain name, address or prefix that cannot be normalized."""


def _is_plain_ldh(label: str) -> bool:
    # "ab--" labels are reserved (xn-- and friends): idna must judge those.
    return _LDH_LABEL.match(label) is not None and label[2:4] != "--"


def normalize_domain(name: str) -> str:
    """Return the canonical A-label form of ``name`` or raise NameError_."""
    if not isinstance(name, str) or not name:
        raise NameError_("empty domain name")
    text = name.translate(_DOTS)
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise NameError_("domain name is only a dot")
    lowered = text.lower() if text.isascii() else text
    labels = lowered.split(".")
    if not (lowered.isascii() and all(_is_plain_ldh(label) for label in labels)):
        try:
            lowered = idna.encode(text, uts46=True, transitional=False).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as exc:
            raise NameError_(f"not a valid domain name: {name!r} ({exc})") from None
        labels = lowered.split(".")
    for label in labels:
        if not 1 <= len(label) <= 63:
            raise NameError_(f"label of {len(label)} octets in {name!r} (1-63 allowed)")
    if len(lowered) > 253:
        raise NameError_(f"domain name of {len(lowered)} octets (253 allowed): {name[:40]!r}...")
    return lowered


def normalize_ip(value: str) -> str:
    """Return the canonical text of one IPv4 or IPv6 address."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise NameError_(f"not an IPv4 or IPv6 address: {value!r}") from None


def normalize_cidr(value: str) -> str:
    """Return the canonical text of a prefix; host bits set is an error."""
    if "/" not in value:
        raise NameError_(f"prefix {value!r} has no length (use type 'ip' for one address)")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise NameError_(f"not a valid prefix: {value!r} ({exc})") from None


def network_of(kind: str, value: str) -> IPNetwork:
    """The network a normalized ``ip`` or ``cidr`` target covers."""
    return (
        ipaddress.ip_network(value)
        if kind == "cidr"
        else ipaddress.ip_network(value + ("/32" if ":" not in value else "/128"))
    )


def domain_to_wire(name: str) -> bytes:
    """Wire form (length-prefixed labels, root octet) of a normalized name."""
    out = bytearray()
    for label in name.split("."):
        out.append(len(label))
        out += label.encode("ascii")
    out.append(0)
    return bytes(out)


def parent_domains(name: str) -> list[str]:
    """``name`` and each of its parent domains, most specific first."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]

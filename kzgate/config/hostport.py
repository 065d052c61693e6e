"""A socket address as the configuration file writes it: ``host:port`` or ``[ipv6]:port``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A socket address; ``host`` is an IP address or a host name, without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, allow_port_zero: bool = False) -> HostPort:
        """Parse ``host:port`` or ``[ipv6]:port``; raise ValueError saying what is wrong."""
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"expected '[IPv6 address]:port' (got {text!r})")
            _check_ipv6(host)
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"expected 'host:port' (got {text!r})")
            if ":" in host:
                raise ValueError(
                    f"put an IPv6 address in brackets, e.g. '[::1]:8443' (got {text!r})"
                )
            _check_host(host)
        return cls(host, _parse_port(port_text, allow_port_zero))


def is_ldh_name(text: str) -> bool:
    """Letters-digits-hyphen labels, at most 253 characters; one trailing dot allowed."""
    labels = text.removesuffix(".").split(".")
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv6 address") from None


def _check_host(host: str) -> None:
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():  # all-numeric last label: only an IPv4 address can look like this
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif not is_ldh_name(host):
        raise ValueError(f"{host!r} is not an IP address or host name")


def _parse_port(text: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not _PORT.fullmatch(text) or not low <= int(text) <= 65535:
        raise ValueError(f"port must be a number {low}-65535 (got {text!r})")
    return int(text)

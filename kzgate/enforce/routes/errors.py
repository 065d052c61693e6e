"""What goes wrong between kzgate and its routing table."""

from __future__ import annotations


class RoutesError(Exception):
    """The kernel refused a route change, or could not be reached."""


class RoutesUnknown(RoutesError):
    """Answers were lost (ENOBUFS): what the table holds is unknown until a dump reconciles it."""

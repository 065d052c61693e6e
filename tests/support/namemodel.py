"""What a NameTable must answer, as plain Python: the model the table tests check it against."""

from __future__ import annotations


def model_match(model: dict[bytes, int], qname: bytes) -> tuple[int, int] | None:
    """The longest suffix of the wire name ``qname`` that ``model`` holds: (its offset, value).

    Suffixes are tried label by label from the whole name down, so a name and its
    parent both held answer with the name; the root (the last octet) never matches.
    """
    off = 0
    while off < len(qname) - 1:
        if qname[off:] in model:
            return off, model[qname[off:]]
        off += qname[off] + 1
    return None

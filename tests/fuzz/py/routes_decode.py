"""Fuzz how kzgate/enforce/routes/ reads rtnetlink datagrams: wire.messages, then decode.route;
and decode.dump_part, the reconcile's fast reader, which must find what route finds.

The bytes are one datagram on the routes monitor or writer socket (a route
notification, a dump part, an ack). The kernel writes them, but a monitor in
the route groups hears every table's changes, and the decoder must not be the
weak point: ``route`` documents no error, it returns a Route or None. A Route
it returns must be one kzgate could have written: its prefix's family and
length agree with the message, and encoding it again and decoding that gives
the same Route.
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from kzgate.enforce.nft.decode import parse_ack
    from kzgate.enforce.nft.wire import NLMSG_ERROR, messages
    from kzgate.enforce.routes.decode import Key, Route, dump_part, route
    from kzgate.enforce.routes.encode import add

MAX_LEN = 65535  # a netlink read here takes at most 1 MiB; 64 KiB keeps the fuzzer fast
TIMEOUT = 5  # seconds per input


def target(data: bytes) -> None:
    # dump_part (the reconcile's fast reader) finds what route finds, seq 1, table 666, proto 252
    fast: dict[Key, int] = {}
    end = dump_part(data, 1, 666, 252, fast)
    slow: dict[Key, int] = {}
    for msg in messages(data):
        if msg.seq != 1:
            continue
        if msg.kind in (2, 3):
            assert end is not None and (end.kind, end.payload) == (msg.kind, msg.payload)
            break
        r = route(msg)
        if r is not None and r.table == 666 and r.protocol == 252:
            family = 2 if r.prefix.version == 4 else 10
            slow[(family, int(r.prefix.network_address), r.prefix.prefixlen)] = r.type
    else:
        assert end is None
    assert fast == slow, "dump_part and route disagree"
    for msg in messages(data):
        if msg.kind == NLMSG_ERROR and len(msg.payload) >= 4:
            parse_ack(msg)
        found = route(msg)
        if found is None:
            continue
        assert isinstance(found, Route)
        assert 0 <= found.table < 2**32 and 0 <= found.protocol < 256 and 0 <= found.type < 256
        (again,) = messages(add(1, found.prefix, found.table, found.protocol, found.type))
        assert route(again) == found, "a decoded route does not survive a round trip"


if __name__ == "__main__":
    fuzz(target)

"""The nftables enforcer: our own table, its sets, one netlink batch per change.

- ``enforcer``: NftEnforcer, the Enforcer that keeps the sets equal to the state;
- ``skeleton``: the table, sets, chains and rules, written by ``nft -f``;
- ``netlink``: the socket that sends a batch and reads its acks by errno;
- ``encode``: set elements (interval keys, comments) and batches, as bytes;
- ``decode``: acks, extended acks, rule counters, notifications, from bytes;
- ``drift``: the monitor that ignores our own transactions and asks for a repair;
- ``wire``: the kernel's numbers and the netlink framing both ways.
"""

from kzgate.enforce.nft.enforcer import NftEnforcer
from kzgate.enforce.nft.errors import NftDrift, NftError
from kzgate.enforce.nft.skeleton import skeleton

__all__ = ["NftDrift", "NftEnforcer", "NftError", "skeleton"]

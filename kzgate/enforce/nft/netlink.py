"""The netlink socket: send one batch, then read every answer it caused, by errno.

The sockets are plain ``socket.socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)``:
a batch is one sendmsg of up to ~100 MB whose acks are all queued when it
returns, which pyroute2's NetlinkSocket (its own marshalling and receive loop)
adds nothing to but copies and per-message objects.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from kzgate.enforce.nft.decode import Ack, generation, parse_ack
from kzgate.enforce.nft.encode import BatchBuilder, getgen_request
from kzgate.enforce.nft.errors import NftDrift, NftError
from kzgate.enforce.nft.wire import NLMSG_DONE, NLMSG_ERROR, Message, messages
from kzgate.enforce.sockopts import set_receive_buffer, set_send_buffer

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11


def open_socket(rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        # Errors echo only the failing message's header, plus the kernel's reason.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        set_receive_buffer(sock, rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


class Netlink:
    """One batch socket: send a whole batch, then collect every answer it caused."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.portid: int = sock.getsockname()[0]
        self.seq = 0

    def transact(self, builder: BatchBuilder) -> None:
        data = b"".join(builder.finish())
        self.seq = builder.seq
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < len(data) + 4096:
            set_send_buffer(self.sock, len(data) + 4096)
        self._drain()  # answers to an earlier, failed exchange must not be read as ours
        try:
            self.sock.send(data)
        except OSError as exc:
            raise NftError(f"netlink send of a {len(data)}-byte batch failed: {exc}") from exc
        # The kernel runs the batch inside send(): every answer is queued by now.
        acks: dict[int, Ack] = {}
        for msg in self._drain():
            if msg.kind == NLMSG_ERROR:
                ack = parse_ack(msg)
                acks[ack.seq] = ack
        _check(builder, acks)

    def _drain(self) -> list[Message]:
        out: list[Message] = []
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # answers lost: the outcome is unknown
                    raise NftError("netlink acks overflowed the receive buffer") from exc
                raise
            out.extend(messages(data))

    def generation(self) -> int:
        self.seq += 1
        for msg in self.dump(getgen_request(self.seq), until_one=True):
            gen = generation(msg)
            if gen is not None:
                return gen
        raise NftError("no answer to a ruleset generation request")

    def dump(
        self, request: bytes, timeout: float = 5.0, *, until_one: bool = False
    ) -> list[Message]:
        self._drain()
        self.sock.settimeout(timeout)
        try:
            self.sock.send(request)
            out: list[Message] = []
            while True:
                for msg in messages(self.sock.recv(1 << 20)):
                    if msg.kind == NLMSG_DONE:
                        return out
                    if msg.kind == NLMSG_ERROR:
                        ack = parse_ack(msg)
                        if ack.errno:
                            raise NftError(f"netlink dump failed: {ack.describe()}")
                        return out
                    out.append(msg)
                    if until_one:
                        return out
        finally:
            self.sock.settimeout(None)

    def query(self, request: bytes, seq: int, timeout: float = 5.0) -> tuple[list[Message], int]:
        """Send one acked request: the messages answered before its ack, and the ack's errno."""
        self._drain()
        self.sock.settimeout(timeout)
        try:
            self.sock.send(request)
            out: list[Message] = []
            while True:
                for msg in messages(self.sock.recv(1 << 16)):
                    if msg.seq != seq:
                        continue
                    if msg.kind == NLMSG_ERROR:
                        return out, parse_ack(msg).errno
                    out.append(msg)
        except TimeoutError:
            raise NftError(f"no answer to a netlink request within {timeout:g} s") from None
        finally:
            self.sock.settimeout(None)


def _check(builder: BatchBuilder, acks: Mapping[int, Ack]) -> None:
    """Raise unless every message was acked with success (else the kernel rolled all back)."""
    failed = [a for a in acks.values() if a.errno]
    if failed:
        codes = {a.errno for a in failed}
        detail = "; ".join(sorted({a.describe() for a in failed}))
        # ENOENT: an element (or the set, or the table) we believed present is
        # gone. EEXIST: one we believed absent is there, or overlaps one.
        if codes <= {errno.ENOENT, errno.EEXIST}:
            raise NftDrift(f"nftables batch rolled back, our view drifted: {detail}")
        if codes & {errno.EPERM, errno.EACCES}:
            raise NftError(f"nftables batch refused, CAP_NET_ADMIN needed: {detail}")
        raise NftError(f"nftables batch rolled back: {detail}")
    missing = [s for s in builder.acked if s not in acks]
    if missing:
        raise NftError(f"no answer to {len(missing)} of {len(builder.acked)} batch messages")

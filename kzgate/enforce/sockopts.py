"""Socket options both netlink enforcers (nftables, routes) set, in one place.

Python's socket module names neither the FORCE buffer options nor
SO_ATTACH_FILTER, so their Linux numbers are here too.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

# One classic BPF instruction: (code, jt, jf, k).
Instruction = tuple[int, int, int, int]


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, size)


def set_send_buffer(sock: socket.socket, size: int) -> None:
    _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, size)


def _set_buffer(sock: socket.socket, plain: int, force: int, size: int) -> None:
    # FORCE needs CAP_NET_ADMIN, which writing to the kernel needs anyway; the
    # plain option is capped by net.core.[rw]mem_max. The kernel doubles the value.
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def attach_filter(sock: socket.socket, code: Sequence[Instruction]) -> None:
    """Attach a classic BPF program: the kernel drops what it rejects before it is queued."""
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in code)
    buf = ctypes.create_string_buffer(raw, len(raw))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}; the kernel
    # copies the program during setsockopt, so buf need not outlive this call.
    prog = struct.pack("HL", len(code), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)

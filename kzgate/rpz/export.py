"""``kzgate export rpz FILE``: the zone as a master file, for resolvers without a network path."""

from __future__ import annotations

import ipaddress
import os
import tempfile
import time
from pathlib import Path

from kzgate.config import RpzConfig
from kzgate.model import Diff, State
from kzgate.rpz.zone import Zone, text_lines, uncarried, zone_params


def write_zone_file(zone: Zone, path: Path | str) -> None:
    """Write ``zone`` to ``path`` atomically: a reader sees the old file or the new one, whole."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii", buffering=1 << 20) as out:
            out.writelines(text_lines(zone))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; resolvers run as other users
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # the rename is durable only once the directory is synced
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def export_rpz(
    state: State,
    cfg: RpzConfig,
    block_mode: str,
    sinkholes: tuple[ipaddress.IPv4Address, ipaddress.IPv6Address],
    path: Path | str,
) -> tuple[int, list[str]]:
    """Write the zone for ``state`` to ``path``: the records written, and the targets left
    out because their owner names would pass 255 octets (a resolver would refuse the file)."""
    zone = Zone(zone_params(cfg, block_mode, *sinkholes), int(time.time()))
    zone.replace(state)
    write_zone_file(zone, path)
    left = uncarried(zone.params, Diff(domains_added=state.domains, prefixes_added=state.prefixes))
    return zone.record_count(), sorted(left.domains_added) + [str(p) for p in left.prefixes_added]

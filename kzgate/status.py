"""`kzgate status`: a summary an engineer reads in five seconds.

``render`` is pure: the register's statistics and, when the daemon answers,
its live view (from GET /status on the metrics listener) in; text out.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from kzgate.config import HostPort

KINDS = ("domain", "ip", "cidr", "url", "app")
STATUSES = ("active", "resumed", "pending", "cancelled")
# Fields of GET /status rendered by name below; any other is an enforcer's own
# (Enforcer.status) and is shown as it comes, so a new enforcer needs no edit here.
KNOWN_FIELDS = frozenset(
    {"version", "ready", "enforcers", "listening", "nft", "dns", "not_enforced", "feeds"}
    | {"probes"}
)


def fetch_live(metrics: HostPort, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running daemon's own view, or None when it does not answer."""
    host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host
    try:
        with urllib.request.urlopen(f"http://{host}:{metrics.port}/status", timeout=timeout) as r:
            return dict(json.loads(r.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def render(
    stats: Mapping[str, Any], gaps: Mapping[str, list[int]], live: Mapping[str, Any] | None
) -> str:
    lines = []
    if live is None:
        lines.append("daemon        NOT RUNNING (metrics listener does not answer)")
    else:
        state = "ready" if live.get("ready") else "starting"
        lines.append(f"daemon        running, {state}  (kzgate {live.get('version', '?')})")
        enforcers = live.get("enforcers", {})
        lines.append(
            "enforcers     "
            + "   ".join(f"{name} {health}" for name, health in sorted(enforcers.items()))
        )
        nft = live.get("nft")
        if nft:
            lines.extend(_nft(nft))
        dns = live.get("dns")
        if dns:
            lines.append("dns           " + _dns_workers(dns))
        lines.extend(_feeds(live.get("feeds") or {}))
        lines.extend(_probes(live.get("probes") or {}))
        for key, value in sorted(live.items()):
            if key not in KNOWN_FIELDS:
                lines.append(f"{key:<13} {json.dumps(value, sort_keys=True, ensure_ascii=False)}")
    if live is not None and "not_enforced" in live:
        lines.extend(_not_enforced(live["not_enforced"]))
    instructions = stats.get("instructions", {})
    lines.append("instructions  " + "   ".join(f"{s} {instructions.get(s, 0):,}" for s in STATUSES))
    targets = stats.get("targets", {})
    lines.append("targets       " + "   ".join(f"{k} {targets.get(k, 0):,}" for k in KINDS))
    gap_text = [
        f"{issuer}: {len(missing)} missing ({', '.join(map(str, missing[:5]))}"
        + (", …)" if len(missing) > 5 else ")")
        for issuer, missing in sorted(gaps.items())
        if missing
    ]
    lines.append("seq gaps      " + ("   ".join(gap_text) if gap_text else "none"))
    lines.append("last task     " + _last_task(stats.get("last_task")))
    return "\n".join(lines)


def _nft(nft: Mapping[str, Any]) -> list[str]:
    """Elements and drops per family; in set-only mode, the rules the operator's chains need."""
    elements = nft.get("elements", {})
    drops = nft.get("dropped_packets", {})
    lines = [
        "nftables      "
        + "   ".join(
            f"{fam}: {elements.get(fam, 0):,} prefixes, {drops.get(fam, 0):,} dropped"
            for fam in ("ipv4", "ipv6")
        )
    ]
    rules = nft.get("operator_rules")
    if rules:
        lines.append("nft rules     set-only: a chain of yours in kzgate's table needs all of:")
        lines.extend(f"                {rule}" for rule in rules)
        unmatched = nft.get("unmatched_sets")
        if unmatched:
            lines.append(
                "              NO RULE looks up "
                + ", ".join(unmatched)
                + ": what they hold is NOT dropped"
            )
    return lines


def _not_enforced(left_out: Mapping[str, Any]) -> list[str]:
    """Targets an enforcer leaves out (it cannot represent them), one per line: names are long."""
    if not left_out:
        return ["not enforced  none"]
    lines = []
    for name, what in sorted(left_out.items()):
        count, targets = int(what.get("count", 0)), list(what.get("targets", []))
        lines.append(f"not enforced  {name}: {count:,} target(s), enforced everywhere else")
        lines.extend(f"                {value}" for value in targets)
        if count > len(targets):
            lines.append(f"                … and {count - len(targets):,} more")
    return lines


def _feeds(feeds: Mapping[str, Any]) -> list[str]:
    """Each issuer's feed (task-protocol.md §6): a state other than in_sync in capitals."""
    lines = []
    for iss, feed in sorted(feeds.items()):
        state = str(feed.get("state", "?"))
        head = feed.get("head_seq")
        parts = [
            state if state == "in_sync" else state.upper(),
            f"head {'none yet' if head is None else head}",
            f"held {feed.get('held_seq', 0)} without a gap ({feed.get('gaps', 0)} missing)",
            f"last pull {feed.get('last_pull') or 'never'}",
        ]
        if feed.get("diverged_at") is not None:
            parts.append(f"first differing seq {feed['diverged_at']}")
        if feed.get("error"):
            parts.append(str(feed["error"]))
        lines.append(f"{'feed ' + iss:<13} " + "   ".join(parts))
    return lines


def _probes(probes: Mapping[str, Any]) -> list[str]:
    """The last probe round (failures per place, each failed check) and the lifts still
    being checked; a place with failures in capitals."""
    if not probes.get("enabled"):
        return ["probes        off"] if probes else []
    last = probes.get("last_round")
    if last is None:
        lines = ["probes        no round yet"]
    else:
        failures = dict(last.get("failures", {}))
        unreachable = dict(last.get("unreachable", {}))
        places = "   ".join(
            (f"{place} FAILED {n}" if n else f"{place} ok")
            + (f" ({unreachable[place]} unreachable)" if unreachable.get(place) else "")
            for place, n in sorted(failures.items())
        )
        lines = [
            f"probes        last round {last.get('at')}: {last.get('checks', 0)} checks   {places}"
        ]
        lines.extend(
            f"                {f['target']} at {f['place']}: expected {f['expect']}, "
            f"observed {f['observed']} ({f['instruction']})"
            for f in last.get("failed", [])
        )
    for lift in probes.get("pending_lifts", []):
        lines.append(
            f"lift pending  {lift['instruction']}: applied {lift['applied_at']}, "
            "not yet verified at every place"
        )
    for lift in probes.get("recent_verified", []):
        lines.append(f"lift verified {lift['instruction']}: {lift['seconds']} s after its receipt")
    return lines


def _dns_workers(dns: Mapping[str, Any]) -> str:
    """The DNS workers: is the C fast path answering (issue 10), did any crash."""
    workers = dns.get("workers", [])
    count = len(workers)
    on_c = sum(1 for w in workers if w.get("engine") == "c")
    if dns.get("fast_path") != "built":
        engine = "pure Python: the C fast path is NOT BUILT"
    elif on_c == count:
        engine = "C fast path active"
    else:
        moved = ", ".join(str(w.get("slot")) for w in workers if w.get("engine") != "c")
        engine = (
            f"C fast path active on {on_c}, OFF on {count - on_c} (worker {moved}: "
            "pure Python after repeated crashes, until restart)"
        )
    parts = [f"{count} worker{'' if count == 1 else 's'}", engine]
    parts.append(f"{sum(int(w.get('crashes', 0)) for w in workers):,} crashes")
    down = [f"{w.get('slot')} {w.get('state')}" for w in workers if w.get("state") != "up"]
    if down:
        parts.append("not serving: worker " + ", ".join(down))
    return "   ".join(parts)


def _last_task(last: Mapping[str, Any] | None) -> str:
    if not last:
        return "none yet"
    text = f"{last['iss']}/{last['id']} {last['type']}, received {last['received_at']}"
    if last.get("applied_at"):
        took = dt.datetime.fromisoformat(last["applied_at"]) - dt.datetime.fromisoformat(
            last["received_at"]
        )
        text += f", applied in {took.total_seconds() * 1000:.1f} ms"
    else:
        text += ", NOT yet applied everywhere"
    return text

"""``kzgate verify``: a one-shot sweep, a table on stdout, a signed report on disk.

No flag: one round's sample (as the daemon's rounds take it). ``--instruction``:
every target of one instruction. ``--all``: every target in the register,
streamed, at ``--rate`` targets a second, with progress on stderr (flags: cli.py). Exit 0 when
no check failed, 1 when one did, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from kzgate.model import InstructionRef
from kzgate.probes.model import Check, ProbeTarget
from kzgate.probes.places import blocks_for, places_for
from kzgate.probes.plan import PlanReads, everything, lift_plan, round_plan, window_start
from kzgate.probes.report import build_report, sign_report
from kzgate.probes.sweep import sweep

DEFAULT_RATE = 100.0  # targets a second: --all over 1,000,000 targets takes under 3 hours
KZ_TIME = dt.timezone(dt.timedelta(hours=5))  # Kazakhstan, one zone since 2024-03-01
_INSTRUCTION = re.compile(r"(?:(?P<iss>[^:]+):)?(?P<number>.+)/(?P<date>\d{4}-\d\d-\d\d)")


class UsageError(Exception):
    """A bad flag or an unusable config: exit 2 with this message."""


def main(args: argparse.Namespace) -> int:
    from kzgate.config import ConfigError, load_config
    from kzgate.keys import KeyFileError, load_private_key

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        rate = DEFAULT_RATE if args.rate is None else args.rate
        if not rate > 0:
            raise UsageError(f"--rate must be a positive number (got {args.rate})")
        ref = parse_instruction(args.instruction, cfg) if args.instruction else None
        key = load_private_key(cfg.operator.receipt_key)
    except (UsageError, KeyFileError) as exc:
        print(f"kzgate: {exc}", file=sys.stderr)
        return 2
    register = open_register(cfg)
    kernel = None
    try:
        places, kernel = places_for(cfg, _warn)
        scope, targets = choose_targets(cfg, register, ref, args.all)
        started = dt.datetime.now(dt.UTC)
        progress = Progress(sys.stderr) if args.all else None
        blocks = blocks_for(cfg)
        checks = asyncio.run(sweep(targets, places, kernel, blocks, rate=rate, progress=progress))
        finished = dt.datetime.now(dt.UTC)
        if progress is not None:
            progress.finish()
    except UsageError as exc:
        print(f"kzgate: {exc}", file=sys.stderr)
        return 2
    finally:
        register.close()
        close = getattr(kernel, "close", None)
        if close is not None:
            close()
    body = build_report(
        checks, operator=cfg.operator.id, scope=scope, started=started, finished=finished
    )
    report = sign_report(body, key, cfg.operator.id)
    path = args.report or default_report_path(cfg, finished)
    write_report(path, report)
    print_table(checks, sys.stdout, only_problems=args.all)
    summary = report["summary"]
    print(
        f"{summary['checks']} checks: {summary['pass']} pass, {summary['fail']} fail,"
        f" {summary['unreachable']} unreachable; report {path}"
    )
    return 1 if summary["fail"] else 0


def parse_instruction(text: str, cfg: Any) -> InstructionRef:
    """``[ISS:]NUMBER/DATE``; the issuer may be left out when the config has only one."""
    m = _INSTRUCTION.fullmatch(text)
    if m is None:
        raise UsageError(f"--instruction {text!r}: expected [ISS:]NUMBER/YYYY-MM-DD")
    try:
        dt.date.fromisoformat(m["date"])
    except ValueError:
        raise UsageError(f"--instruction {text!r}: {m['date']} is not a date") from None
    issuers = [issuer.id for issuer in cfg.issuers]
    iss = m["iss"]
    if iss is None:
        if len(issuers) != 1:
            raise UsageError(
                f"--instruction {text!r}: name the issuer, ISS:NUMBER/DATE (one of {issuers})"
            )
        iss = issuers[0]
    return InstructionRef(iss, m["number"], m["date"])


def _warn(text: str) -> None:
    print(f"kzgate: {text}", file=sys.stderr)


def open_register(cfg: Any) -> Any:
    from kzgate.register.store import Register, RegisterError

    try:
        return Register.open(cfg.register.path, create=False)
    except RegisterError as exc:
        print(f"kzgate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def choose_targets(
    cfg: Any, register: PlanReads, ref: InstructionRef | None, every: bool
) -> tuple[str, Iterable[ProbeTarget]]:
    if every:
        return "all", everything(register)
    if ref is not None:
        targets = lift_plan(register, ref)
        if not targets:
            raise UsageError(f"{ref.label()}: no such instruction, or nothing in it to probe")
        return f"instruction {ref.label()}", targets
    now = dt.datetime.now(KZ_TIME)
    round_no = int(now.timestamp() // cfg.probes.interval)
    # round_no only varies the subdomain probes' names and where the register's
    # rotation of the restricted targets starts.
    return "sample", round_plan(register, cfg.probes.sample, round_no, window_start(now))


def default_report_path(cfg: Any, at: dt.datetime) -> Path:
    state_dir = Path(cfg.register.path).parent
    return state_dir / "verify" / f"verify-{at.strftime('%Y%m%dT%H%M%S.%fZ')}.json"


def write_report(path: Path, report: dict[str, Any]) -> None:
    from kzgate.keys import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    atomic_write(path, data, 0o644)


def print_table(checks: Iterable[Check], out: TextIO, *, only_problems: bool) -> None:
    rows = [
        (c.target.value, f"{c.place.kind} {c.place.name}", c.target.expect, c.observed, c.outcome)
        for c in checks
        if not only_problems or c.outcome != "pass"
    ]
    head = ("TARGET", "PLACE", "EXPECTED", "OBSERVED", "OUTCOME")
    if only_problems:
        print("checks that did not pass (every check is in the report):", file=out)
    widths = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in range(4)]
    for row in [head, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        print("  ".join([*cells, row[4]]), file=out)


class Progress:
    """Targets done so far, on one rewritten stderr line, at most twice a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = self.shown = time.monotonic()
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.shown < 0.5:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        self.out.write(f"\r{done} targets checked ({rate:.0f}/s)")
        self.out.flush()

    def finish(self) -> None:
        self.out.write(f"\r{self.done} targets checked\n")
        self.out.flush()

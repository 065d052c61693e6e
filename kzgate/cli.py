"""The command line: run, check-config, lookup, status, keys, task, audit, feed, dev-init."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kzgate import __version__

DEFAULT_CONFIG = "/etc/kzgate/kzgate.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kzgate", description=__doc__)
    p.add_argument("--version", action="version", version=f"kzgate {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; list every error")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)

    lookup = sub.add_parser("lookup", help="is a name or an address restricted, and by what")
    lookup.add_argument("query", help="a domain name or an IP address")
    lookup.add_argument("--config", default=DEFAULT_CONFIG)
    lookup.set_defaults(func=cmd_lookup)

    status = sub.add_parser("status", help="a summary of the register")
    status.add_argument("--config", default=DEFAULT_CONFIG)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    keys = sub.add_parser("keys", help="key management").add_subparsers(metavar="ACTION")
    gen = keys.add_parser("generate", help="generate an Ed25519 key pair (PEM)")
    gen.add_argument("--private", required=True, type=Path)
    gen.add_argument("--public", required=True, type=Path)
    gen.set_defaults(func=cmd_keys_generate)

    dev = sub.add_parser("dev-init", help="create development keys and certificates if missing")
    dev.add_argument("--base", type=Path, default=Path("var/dev"))
    dev.set_defaults(func=cmd_dev_init)

    task = sub.add_parser("task", help="the regulator's side: build, sign, push tasks")
    tsub = task.add_subparsers(metavar="ACTION")
    new = tsub.add_parser("new", help="print a task as JSON")
    new.add_argument("--type", choices=["restrict", "resume"], required=True)
    new.add_argument("--iss", required=True)
    new.add_argument("--id", required=True)
    new.add_argument("--seq", type=int, required=True)
    new.add_argument("--number", required=True, help="the instruction's outgoing number")
    new.add_argument("--date", required=True, help="the instruction's date, YYYY-MM-DD")
    new.add_argument(
        "--authority", default="Ministry of Culture and Information of the Republic of Kazakhstan"
    )
    new.add_argument("--aud", action="append", help="operator id (repeat); default '*'")
    new.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TYPE:VALUE",
        help="e.g. domain:example.kz, ip:192.0.2.7, cidr:10.0.0.0/24 (repeat)",
    )
    new.add_argument("--ground", default="Law On Communications, art. 41-1")
    new.add_argument("--reason")
    new.add_argument("--applicant")
    new.add_argument("--removed-link", action="append", default=[])
    new.add_argument("--removed-as-of")
    new.set_defaults(func=cmd_task_new)
    sign = tsub.add_parser("sign", help="sign a task JSON (file or -) into a JWS")
    sign.add_argument("file", nargs="?", default="-")
    sign.add_argument("--key", required=True, type=Path, help="the issuer's private key (PEM)")
    sign.add_argument("--kid", required=True)
    sign.set_defaults(func=cmd_task_sign)
    push = tsub.add_parser("push", help="POST a signed task (file or -) to kzgate")
    push.add_argument("file", nargs="?", default="-")
    push.add_argument("--url", default="https://127.0.0.1:8443")
    push.add_argument("--ca", required=True, type=Path, help="CA that signed the server cert")
    push.add_argument("--cert", type=Path, help="client certificate (PEM)")
    push.add_argument("--cert-key", type=Path, help="client certificate's key (PEM)")
    push.set_defaults(func=cmd_task_push)

    export = sub.add_parser("export", help="export enforced state").add_subparsers(metavar="WHAT")
    rpz = export.add_parser("rpz", help="write the RPZ zone file (for air-gapped resolvers)")
    rpz.add_argument("file", type=Path)
    rpz.add_argument("--config", default=DEFAULT_CONFIG)
    rpz.set_defaults(func=cmd_export_rpz)

    feed = sub.add_parser("feed", help="the issuer's side of the feed (task-protocol.md §6)")
    fsub = feed.add_subparsers(metavar="ACTION")
    fserve = fsub.add_parser("serve", help="publish a directory of signed tasks as a feed")
    fserve.add_argument("--dir", required=True, type=Path, help="the *.jws task files")
    fserve.add_argument("--iss", required=True, help="the issuer whose log this is")
    fserve.add_argument("--key", required=True, type=Path, help="issuer key for heads (PEM)")
    fserve.add_argument("--kid", required=True, help="the id of that key")
    fserve.add_argument("--cert", required=True, type=Path, help="TLS certificate (PEM)")
    fserve.add_argument("--key-file", required=True, type=Path, help="its TLS key (PEM)")
    fserve.add_argument("--client-ca", type=Path, help="require client certs from this CA")
    fserve.add_argument("--listen", default="127.0.0.1:9443", help="host:port")
    fserve.add_argument("--ttl", type=float, default=600.0, help="seconds a head stays fresh")
    fserve.add_argument("--base", help="URL path the feed is under (default: /ISS)")
    fserve.set_defaults(func=cmd_feed_serve)

    verify = sub.add_parser("verify", help="check that every block holds and every lift took")
    verify.add_argument("--config", default=DEFAULT_CONFIG)
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--instruction", metavar="[ISS:]NUMBER/DATE", help="one instruction")
    which.add_argument("--all", action="store_true", help="every target in the register")
    verify.add_argument("--rate", type=float, help="targets a second (default 100)")
    verify.add_argument("--report", type=Path, help="the signed report's path")
    verify.set_defaults(func=cmd_verify)

    audit = sub.add_parser("audit", help="the audit chain").add_subparsers(metavar="ACTION")
    verify = audit.add_parser("verify", help="prove the audit chain unbroken")
    verify.add_argument("--config", default=DEFAULT_CONFIG)
    verify.set_defaults(func=cmd_audit_verify)
    audit_export = audit.add_parser("export", help="export the audit log")
    audit_export.add_argument("--config", default=DEFAULT_CONFIG)
    audit_export.add_argument("--format", choices=["json", "csv"], default="json")
    audit_export.add_argument("--output", type=Path)
    audit_export.set_defaults(func=cmd_audit_export)
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"kzgate: {message}", file=sys.stderr)
    return code


def _load(path: str) -> Any:
    from kzgate.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from kzgate.daemon import StartupError, serve
    from kzgate.keys import KeyFileError
    from kzgate.logs import setup_logging
    from kzgate.loop import run
    from kzgate.register.store import RegisterError

    cfg = _load(args.config)
    setup_logging(cfg.log.level, cfg.log.format)
    try:
        run(serve(cfg))  # on uvloop when it is installed
    except (StartupError, RegisterError, KeyFileError) as exc:
        return _fail(str(exc))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from kzgate.config import ConfigError, load_config, missing_files

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    problems = missing_files(cfg)
    if not problems:
        problems = _key_problems(cfg)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: ok")
    return 0


def _key_problems(cfg: Any) -> list[str]:
    from kzgate.keys import KeyFileError, load_private_key, load_public_key

    problems = []
    paths = [(load_private_key, cfg.operator.receipt_key)] + [
        (load_public_key, key.public_key) for issuer in cfg.issuers for key in issuer.keys
    ]
    for loader, path in paths:
        try:
            loader(path)
        except KeyFileError as exc:
            problems.append(str(exc))
    return problems


def _open_register(cfg: Any) -> Any:
    from kzgate.register.store import Register, RegisterError

    try:
        return Register.open(cfg.register.path, create=False)
    except RegisterError as exc:
        raise SystemExit(_fail(str(exc))) from None


def cmd_lookup(args: argparse.Namespace) -> int:
    from kzgate.names import NameError_, normalize_domain, normalize_ip

    register = _open_register(_load(args.config))
    try:
        try:
            query = normalize_ip(args.query)
            hits = [(str(n), r) for n, r in register.state.covering_ip(query)]
        except NameError_:
            try:
                query = normalize_domain(args.query)
            except NameError_ as exc:
                return _fail(str(exc), 2)
            hits = register.state.covering_domain(query)
    finally:
        register.close()
    print(f"{query}: {'BLOCKED' if hits else 'allowed'}")
    for target, ref in hits:
        print(f"  {target}  by {ref.label()}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from kzgate.status import fetch_live, render

    cfg = _load(args.config)
    register = _open_register(cfg)
    try:
        stats = register.stats()
        gaps = register.seq_gaps()
    finally:
        register.close()
    live = fetch_live(cfg.metrics.listen) if cfg.metrics.enabled else None
    if args.json:
        print(json.dumps({"stats": stats, "seq_gaps": gaps, "live": live}, indent=2, default=str))
    else:
        print(render(stats, gaps, live))
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from kzgate.keys import generate_keypair

    generate_keypair(args.private, args.public)
    print(f"wrote {args.private} and {args.public}")
    return 0


def cmd_dev_init(args: argparse.Namespace) -> int:
    from kzgate.devpki import ensure_dev_material

    for path in ensure_dev_material(args.base):
        print(f"created {path}")
    return 0


def cmd_task_new(args: argparse.Namespace) -> int:
    from kzgate.protocol.build import new_task

    targets: list[tuple[str, str]] = []
    for item in args.target:
        kind, sep, value = item.partition(":")
        if not sep:
            return _fail(f"--target {item!r}: expected TYPE:VALUE", 2)
        targets.append((kind, value))
    task = new_task(
        iss=args.iss,
        id=args.id,
        seq=args.seq,
        type=args.type,
        authority=args.authority,
        number=args.number,
        date=args.date,
        aud=tuple(args.aud or ["*"]),
        targets=targets if args.type == "restrict" else (),
        ground=args.ground if args.type == "restrict" else None,
        reason=args.reason,
        applicant=args.applicant,
        removed_links=tuple(args.removed_link),
        removed_as_of=args.removed_as_of,
        issued_at=dt.datetime.now(dt.UTC).astimezone(),
    )
    print(json.dumps(task, ensure_ascii=False, indent=2))
    return 0


def _read_input(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def cmd_task_sign(args: argparse.Namespace) -> int:
    from kzgate.errors import TaskError
    from kzgate.keys import load_private_key
    from kzgate.protocol.build import sign_task
    from kzgate.protocol.jsonstrict import loads_object
    from kzgate.protocol.schema import parse_task

    raw = _read_input(args.file)
    try:
        # A regulator should never sign what kzgate would refuse: check it first.
        task = loads_object(raw, "task")
        parse_task(task, raw, args.kid)
    except TaskError as exc:
        return _fail(f"not signed: {exc.detail}", 2)
    print(sign_task(task, load_private_key(args.key), args.kid))
    return 0


def cmd_task_push(args: argparse.Namespace) -> int:
    from kzgate.tls import client_context

    body = _read_input(args.file).strip()
    ctx = client_context(args.ca, args.cert, args.cert_key)
    request = urllib.request.Request(
        args.url.rstrip("/") + "/v1/tasks",
        data=body,
        headers={"Content-Type": "application/jose"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=60) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        return _fail(f"cannot reach {args.url}: {exc.reason}")


def cmd_export_rpz(args: argparse.Namespace) -> int:
    from kzgate.rpz.export import export_rpz

    cfg = _load(args.config)
    register = _open_register(cfg)
    try:
        state = register.state.snapshot()
    finally:
        register.close()
    sinkholes = (cfg.dns.sinkhole_ipv4, cfg.dns.sinkhole_ipv6)
    count, left_out = export_rpz(state, cfg.rpz, cfg.dns.block_mode, sinkholes, args.file)
    print(f"wrote {args.file}: {count} records, zone {cfg.rpz.origin}")
    for value in left_out:
        print(f"not in the zone (owner name over 255 octets): {value}", file=sys.stderr)
    return 0


def cmd_feed_serve(args: argparse.Namespace) -> int:
    import asyncio
    import ssl

    from kzgate.config.hostport import HostPort
    from kzgate.feed.issuerlog import NotInLog, Signer
    from kzgate.feed.server import serve_directory
    from kzgate.keys import KeyFileError, load_private_key
    from kzgate.tls import server_context

    try:
        where = HostPort.parse(args.listen, allow_port_zero=True)
        signer = Signer(
            args.iss, load_private_key(args.key), args.kid, dt.timedelta(seconds=args.ttl)
        )
        tls = server_context(args.cert, args.key_file, args.client_ca)
        base = args.base if args.base is not None else "/" + args.iss
        asyncio.run(
            serve_directory(args.dir, signer, base=base, host=where.host, port=where.port, tls=tls)
        )
    except (ValueError, KeyFileError, NotInLog, OSError, ssl.SSLError) as exc:
        return _fail(str(exc), 2)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from kzgate.probes.verifycli import main as verify_main

    return verify_main(args)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    register = _open_register(_load(args.config))
    try:
        result = register.audit_verify()
    finally:
        register.close()
    if result.ok:
        print(f"audit chain ok: {result.rows} rows")
        return 0
    return _fail(f"audit chain BROKEN at row {result.first_bad}: {result.reason}", 3)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from kzgate.register.audit import export_csv, export_json

    register = _open_register(_load(args.config))
    exporter = export_json if args.format == "json" else export_csv
    try:
        if args.output is None:
            exporter(register.audit_rows(), sys.stdout)
        else:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                exporter(register.audit_rows(), out)
    finally:
        register.close()
    return 0

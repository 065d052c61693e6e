"""The daemon's lifecycle, wired in one place.

Order matters, and each step says why it sits where it does:
config → register (the truth; nothing starts if it cannot be read) → keys →
enforcers reconciled to the register (so nothing is served from a stale policy)
→ listeners bound → READY to systemd → serve until a signal → drain → close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kzgate import __version__, sdnotify
from kzgate.api.app import READY, make_app
from kzgate.api.ratelimit import RateLimiter
from kzgate.api.server import HttpLimits, limited_runner, start_site
from kzgate.api.tls import server_context
from kzgate.config import Config, ConfigError, HostPort, load_config
from kzgate.dns.local import block_settings
from kzgate.dns.telemetry import DnsCollector, WorkerCollector
from kzgate.dns.workers import WorkerPool, WorkerStartError
from kzgate.enforce.base import Enforcer
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.enforce.dryrun import DryRunEnforcer
from kzgate.enforce.nft import NftEnforcer, NftError
from kzgate.keys import KeyFileError, load_private_key, load_public_key
from kzgate.logs import setup_logging
from kzgate.memory import settle_after_start
from kzgate.metrics import Metrics, NftCollector
from kzgate.pipeline import Pipeline
from kzgate.policy import PolicyIndex
from kzgate.protocol.trust import IssuerKey, TrustStore
from kzgate.register.store import Register
from kzgate.reload import plan_reload
from kzgate.rpz.enforcer import RpzEnforcer, RpzError

log = logging.getLogger("kzgate.daemon")


class StartupError(Exception):
    """A start-up failure with one clear line for the operator."""


def build_trust(cfg: Config) -> TrustStore:
    return TrustStore(
        IssuerKey(
            kid=key.kid,
            issuer=issuer.id,
            public_key=load_public_key(key.public_key),
            not_before=key.not_before,
            not_after=key.not_after,
            revoked=key.revoked,
        )
        for issuer in cfg.issuers
        for key in issuer.keys
    )


@dataclass
class Daemon:
    cfg: Config
    metrics: Metrics = field(default_factory=Metrics)
    index: PolicyIndex = field(default_factory=PolicyIndex)
    pipeline: Pipeline | None = None
    runners: list[web.AppRunner] = field(default_factory=list)
    bound: dict[str, tuple[str, int]] = field(default_factory=dict)
    dns: WorkerPool | None = None
    nft: NftEnforcer | None = None
    rpz: RpzEnforcer | None = None
    limiter: RateLimiter | None = None
    _watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.cfg
        # The register first: if the order book cannot be read, nothing else may start.
        register = Register.open(cfg.register.path)
        try:
            trust = build_trust(cfg)
            receipt_key = load_private_key(cfg.operator.receipt_key)
        except Exception:
            register.close()
            raise
        try:
            enforcers = await self._enforcers()
        except BaseException:
            register.close()
            if self.dns is not None:
                await self.dns.close()  # its sockets, bound already
            raise
        self.pipeline = Pipeline(
            register=register,
            enforcers=enforcers,
            trust=trust,
            operator_id=cfg.operator.id,
            receipt_key=receipt_key,
            metrics=self.metrics,
        )
        # Reconcile before serving: a query or a lookup must never see an empty policy.
        # This also forks the DNS workers, from the reconciled index.
        await self.pipeline.start()
        if self.dns is not None and not self.dns.started:
            raise StartupError(f"dns: {self.dns.start_error or 'workers did not start'}")
        if self.rpz is not None:
            # Bound only now: a secondary must never transfer the zone before it
            # holds the register's state (that would briefly lift every block).
            try:
                self.bound["rpz"] = (await self.rpz.start())[0]
            except OSError as exc:
                raise StartupError(f"cannot listen for rpz: {exc.strerror or exc}") from None
            # The start-up reconcile's NOTIFY went out before we listened: say it again.
            self.rpz.announce()
            self.metrics.refusals.watch("rpz", self.rpz.server.refusals.read)
        if self.dns is not None:
            self.bound["dns"] = self.dns.bound[0]
            dns = self.dns
            self.metrics.registry.register(DnsCollector(dns.snapshot))
            self.metrics.registry.register(WorkerCollector(dns.counts))
            self.metrics.refusals.watch("dns", lambda: dns.snapshot().refusals)
        self.limiter = RateLimiter(cfg.api.rate_limit.per_second, cfg.api.rate_limit.burst)
        api = make_app(self.pipeline, max_body_bytes=cfg.api.max_body_bytes, limiter=self.limiter)
        tls = server_context(cfg.api.tls_cert, cfg.api.tls_key, cfg.api.client_ca)
        api_limits = HttpLimits.of_api(cfg.api)
        self.bound["api"] = await self._serve("api", api, cfg.api.listen, api_limits, tls)
        if cfg.metrics.enabled:
            scrape, limits = self._metrics_app(), HttpLimits.of_metrics(cfg.metrics)
            self.bound["metrics"] = await self._serve("metrics", scrape, cfg.metrics.listen, limits)
        api[READY][0] = True
        settle_after_start()
        sdnotify.ready("serving")
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            # Pinged from the event loop itself: if the loop stalls, systemd restarts us.
            self._watchdog = asyncio.create_task(sdnotify.watchdog(interval), name="watchdog")
        log.info(
            "kzgate ready: %s", ", ".join(f"{k} on {h}:{p}" for k, (h, p) in self.bound.items())
        )

    async def reload(self) -> bool:
        """SIGHUP: take over what can change live; name what needs a restart.

        A config that does not validate, or names a key file that cannot be
        read, is refused whole and the running config stays.
        """
        sdnotify.reloading()
        try:
            return await self._reload()
        except Exception:
            # Part of the new settings may be in force (e.g. a worker timed out).
            log.exception("reload failed part-way; the running config may be partly new")
            return False
        finally:
            sdnotify.ready("serving")

    async def _reload(self) -> bool:
        try:
            new = load_config(self.cfg.source)
            trust = build_trust(new)
        except (ConfigError, KeyFileError) as exc:
            log.error("reload refused, running config kept: %s", str(exc).replace("\n", "; "))
            return False
        plan = plan_reload(self.cfg, new)
        assert self.pipeline is not None
        self.pipeline.trust = trust
        merged = plan.merged
        if self.dns is not None:
            await self.dns.set_settings(block_settings(merged.dns))
            if "dns.upstreams" in plan.live:
                await self.dns.set_upstreams(merged.dns.upstreams)
        if self.limiter is not None:
            self.limiter.per_second = merged.api.rate_limit.per_second
            self.limiter.burst = merged.api.rate_limit.burst
        setup_logging(merged.log.level, merged.log.format)
        self.cfg = merged
        log.info(
            "reloaded %s: applied %s; needs a restart: %s",
            self.cfg.source,
            ", ".join(plan.live) or "nothing changed",
            ", ".join(plan.restart) or "nothing",
        )
        return True

    async def _enforcers(self) -> list[Enforcer]:
        cfg = self.cfg
        # The index first: DNS workers are forked from it, so it must already
        # hold a diff when the pool passes that diff on.
        enforcers: list[Enforcer] = [DnsIndexEnforcer(self.index)]
        if cfg.dns.enabled:
            # DNS is served only by worker processes, so that a crash in its data
            # plane costs one worker, never intake, the register, nftables or RPZ.
            # Their sockets are bound here and stay with this process (workers.py).
            self.dns = WorkerPool(self.index, cfg.dns)
            try:
                await self.dns.bind()
            except WorkerStartError as exc:
                raise StartupError(f"dns: {exc}") from None
            enforcers.append(self.dns)
        if cfg.rpz.enabled:
            try:
                self.rpz = RpzEnforcer(
                    cfg.rpz,
                    block_mode=cfg.dns.block_mode,
                    sinkhole_ipv4=cfg.dns.sinkhole_ipv4,
                    sinkhole_ipv6=cfg.dns.sinkhole_ipv6,
                    metrics_registry=self.metrics.registry,
                    serial_file=cfg.register.path.with_name(cfg.register.path.name + ".rpz-serial"),
                )
            except RpzError as exc:
                raise StartupError(f"{cfg.source}: rpz: {exc}") from None
            enforcers.append(self.rpz)
        if not cfg.nftables.enabled:
            enforcers.append(DryRunEnforcer())  # logs what IP targets would do
            return enforcers
        self.nft = NftEnforcer(cfg.nftables, on_drift=self._nft_drifted)
        try:
            await self.nft.start()
        except (NftError, OSError) as exc:
            raise StartupError(f"{cfg.source}: nftables: {exc}") from None
        self.metrics.registry.register(
            NftCollector(self.nft.element_counts, self.nft.drop_counters)
        )
        enforcers.append(self.nft)
        return enforcers

    def _nft_drifted(self) -> None:
        # Someone changed our table or sets: rewrite them from the register, now.
        if self.pipeline is not None:
            self.pipeline.request_repair("nft")

    async def _serve(
        self,
        name: str,
        app: web.Application,
        where: HostPort,
        limits: HttpLimits,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        refused = self.metrics.refusals.counter(name)
        drain = self.cfg.api.drain_seconds
        runner = await limited_runner(app, limits, refused, drain_seconds=drain)
        self.runners.append(runner)
        try:
            return await start_site(runner, where, tls)
        except OSError as exc:
            raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None

    def _metrics_app(self) -> web.Application:
        registry = self.metrics.registry
        pipeline = self.pipeline

        async def scrape(request: web.Request) -> web.Response:
            if pipeline is not None:
                await pipeline.refresh_stored_state()
            if self.dns is not None:
                await self.dns.refresh()  # the workers' counters as of now
            body = generate_latest(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.live_status())

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/status", status)
        return app

    def live_status(self) -> dict[str, object]:
        """The daemon's own view, for `kzgate status` (served on the metrics listener)."""
        enforcers: dict[str, str] = {}
        if self.pipeline is not None:
            dirty = self.pipeline.dirty
            enforcers = {
                e.name: "repairing" if e.name in dirty else "ok" for e in self.pipeline.enforcers
            }
        out: dict[str, object] = {
            "version": __version__,
            "ready": "api" in self.bound,
            "enforcers": enforcers,
            "listening": {k: f"{h}:{p}" for k, (h, p) in self.bound.items()},
        }
        if self.nft is not None:
            try:
                drops = self.nft.drop_counters()
            except Exception:
                drops = {}
            out["nft"] = {"elements": self.nft.element_counts(), "dropped_packets": drops}
        if self.pipeline is not None:
            # per enforcer that leaves targets out: {"count": n, "targets": [the first 20]}
            out["not_enforced"] = self.pipeline.not_enforced_summary()
        if self.dns is not None:
            out["dns"] = self.dns.status()
        return out

    async def stop(self) -> None:
        sdnotify.stopping()
        if self._watchdog is not None:
            self._watchdog.cancel()
        # Listeners close first and in-flight requests finish (bounded by
        # drain_seconds); only then is the register closed under them.
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        if self.dns is not None:
            await self.dns.close()
            self.dns = None
        if self.pipeline is not None:
            await self.pipeline.close()
        if self.nft is not None:
            await self.nft.close()  # the table and its elements stay: fail closed
        if self.rpz is not None:
            await self.rpz.close()


async def serve(cfg: Config) -> None:
    """Run until SIGTERM or SIGINT; a second signal exits at once."""
    daemon = Daemon(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signame)
            # Every acknowledged task is already committed, so skipping the
            # drain loses nothing the register cannot rebuild.
            os._exit(1)
        log.info("%s: draining", signame)
        stop.set()

    reloads: list[asyncio.Task[bool]] = []

    def on_hup() -> None:
        if not reloads or reloads[-1].done():  # one reload at a time
            reloads.append(asyncio.create_task(daemon.reload()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await daemon.start()
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await stop.wait()
    finally:
        await daemon.stop()

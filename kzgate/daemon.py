"""The daemon's lifecycle, wired in one place.

Order matters, and each step says why it sits where it does:
config → register (the truth; nothing starts if it cannot be read) → keys →
enforcers started and reconciled to the register, the DNS index before the
DNS workers (so nothing is served from a stale policy) → enforcers serve (DNS
workers forked from the reconciled index; the RPZ listener bound only once its
zone holds the register's state) → API and metrics listeners bound → READY to
systemd → serve until a signal → drain → close (nftables elements stay: fail
closed). Which enforcers there are, and their own steps, is enforce/base.py's
lifecycle and wiring.py's list: nothing here names one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from kzgate import __version__, sdnotify
from kzgate.api.app import READY, make_app
from kzgate.api.ratelimit import RateLimiter
from kzgate.api.server import HttpLimits, limited_runner, start_site
from kzgate.config import Config, ConfigError, HostPort, load_config
from kzgate.enforce.base import StartError
from kzgate.enforce.set import EnforcerSet
from kzgate.feed.client import FeedClient
from kzgate.feed.ports import FeedSink
from kzgate.feed.pullers import FeedPullers
from kzgate.keys import KeyFileError, load_private_key, load_public_key
from kzgate.logs import setup_logging
from kzgate.memory import keep_for_life, settle_after_start
from kzgate.metrics import Metrics
from kzgate.pipeline import Pipeline, local_now
from kzgate.policy import PolicyIndex
from kzgate.probes.prober import Prober
from kzgate.protocol.trust import IssuerKey, TrustStore
from kzgate.register.store import Register
from kzgate.reload import plan_reload
from kzgate.tls import server_context
from kzgate.wiring import build_enforcers, build_prober

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
    enforcers: EnforcerSet | None = None
    runners: list[web.AppRunner] = field(default_factory=list)
    bound: dict[str, tuple[str, int]] = field(default_factory=dict)
    limiter: RateLimiter | None = None
    feeds: FeedPullers | None = None
    prober: Prober | None = None
    _watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.cfg
        # The register first: if the order book cannot be read, nothing else may start.
        register = Register.open(cfg.register.path)
        keep_for_life()  # the effective state just loaded: never walked by the GC again
        try:
            trust = build_trust(cfg)
            receipt_key = load_private_key(cfg.operator.receipt_key)
        except Exception:
            register.close()
            raise
        try:
            self.enforcers = build_enforcers(cfg, index=self.index)
        except StartError as exc:
            register.close()
            raise StartupError(str(exc)) from None
        self.pipeline = Pipeline(
            register=register,
            enforcers=self.enforcers,
            trust=trust,
            operator_id=cfg.operator.id,
            receipt_key=receipt_key,
            metrics=self.metrics,
        )
        try:
            # Reconcile before serving: a query or a lookup must never see an empty policy.
            await self.pipeline.start()
            # Then serve: DNS workers are forked from the reconciled index; a secondary
            # must never transfer the zone before it holds the register's state.
            await self.enforcers.serve()
        except StartError as exc:
            await self.pipeline.close()  # the enforcers started so far, and the register
            self.pipeline = None
            raise StartupError(str(exc)) from None
        for name, listener in self.enforcers.listeners().items():
            self.bound[name] = listener.address
            self.metrics.refusals.watch(name, listener.refusals)
        await self._start_feeds(self.pipeline)
        if cfg.probes.enabled:
            await self._start_prober(self.pipeline)
        self.limiter = RateLimiter(cfg.api.rate_limit.per_second, cfg.api.rate_limit.burst)
        api = make_app(
            self.pipeline,
            self.pipeline.reader,
            max_body_bytes=cfg.api.max_body_bytes,
            limiter=self.limiter,
        )
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

    async def _start_prober(self, pipeline: Pipeline) -> None:
        """Probe rounds and the check of every lift, once the enforcers serve."""
        self.prober = build_prober(self.cfg, pipeline)
        self.metrics.register(*self.prober.collectors())
        pipeline.on_resumed(self.prober.lift_applied)
        await self.prober.start()

    async def _start_feeds(self, pipeline: Pipeline) -> None:
        """Pull each issuer's signed log (task-protocol.md §6), once the enforcers serve
        the register's state: what the feeds bring goes through the pipeline like a push."""
        sink: FeedSink = pipeline
        max_body = self.cfg.api.max_body_bytes
        self.feeds = FeedPullers(
            sink,
            lambda: pipeline.trust,  # replaced on reload
            lambda feed: FeedClient(feed, max_body),
            clock=local_now,
        )
        self.metrics.register(*self.feeds.collectors())
        try:
            await self.feeds.start(self.cfg.issuers)
        except StartError as exc:
            raise StartupError(str(exc)) from None

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
        if self.enforcers is not None:
            await self.enforcers.reload(merged, plan.live)
        if self.feeds is not None:
            await self.feeds.reload(merged.issuers)
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
        metrics, pipeline, enforcers = self.metrics, self.pipeline, self.enforcers

        async def scrape(request: web.Request) -> web.Response:
            if pipeline is not None:
                await pipeline.reader.refresh(pipeline.trust.issuers())
            if enforcers is not None:
                await enforcers.refresh()  # e.g. the DNS workers' counters as of now
            body, content_type = metrics.exposition()
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.live_status())

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/status", status)
        return app

    def live_status(self) -> dict[str, object]:
        """The daemon's own view, for `kzgate status` (served on the metrics listener)."""
        out: dict[str, object] = {
            "version": __version__,
            "ready": "api" in self.bound,
            "enforcers": {},
            "listening": {k: f"{h}:{p}" for k, (h, p) in self.bound.items()},
        }
        if self.enforcers is not None:
            out["enforcers"] = self.enforcers.health()
            # per enforcer that leaves targets out: {"count": n, "targets": [the first 20]}
            out["not_enforced"] = self.enforcers.not_enforced_summary()
            out.update(self.enforcers.status())  # e.g. "nft", "dns"
        out["feeds"] = self.feeds.status() if self.feeds is not None else {}
        out["probes"] = self.prober.status() if self.prober is not None else {"enabled": False}
        return out

    async def stop(self) -> None:
        sdnotify.stopping()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.feeds is not None:
            # First: nothing pulled may reach a pipeline that is closing.
            await self.feeds.close()
            self.feeds = None
        if self.prober is not None:
            await self.prober.close()
            self.prober = None
        # Listeners close first and in-flight requests finish (bounded by
        # drain_seconds); only then is the register closed under them.
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        if self.pipeline is not None:
            # Every enforcer, then the register. The nftables table and its
            # elements stay: fail closed.
            await self.pipeline.close()
            self.pipeline = None


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

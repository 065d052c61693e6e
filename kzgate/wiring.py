"""Every enforcer the config asks for, built in one place.

Adding an enforcer is one module (see enforce/base.py) and one line here. The
order of the list is the order of start, reconcile, serve and apply. It sits
above dns/, rpz/ and enforce/ (which all build on enforce/base.py), so that
no package has to import another one's enforcer.
"""

from __future__ import annotations

import logging

from kzgate.config import Config
from kzgate.dns.workers import WorkerPool
from kzgate.enforce.base import Enforcer
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.enforce.dryrun import DryRunEnforcer
from kzgate.enforce.nft import NftEnforcer
from kzgate.enforce.routes import RoutesEnforcer
from kzgate.enforce.set import EnforcerSet
from kzgate.pipeline import Pipeline
from kzgate.policy import PolicyIndex
from kzgate.probes.places import ConfiguredSweep
from kzgate.probes.ports import PipelinePorts
from kzgate.probes.prober import Prober
from kzgate.rpz.enforcer import RpzEnforcer

log = logging.getLogger("kzgate.probes")

# The daemon's rounds are small (probes.sample names and addresses, at every
# place); a lift's check covers all of an instruction's targets, so the rate
# bounds what a 100,000-target resume sends at the resolvers.
DAEMON_PROBE_RATE = 200.0  # targets a second


def build_enforcers(cfg: Config, *, index: PolicyIndex) -> EnforcerSet:
    """The enforcers ``cfg`` asks for, around ``index`` (the DNS policy).

    StartError when one cannot even be made (the RPZ primary's TSIG secret).
    """
    # The index first: DNS workers are forked from it, so it must already
    # hold a diff when the pool passes that diff on.
    enforcers: list[Enforcer] = [DnsIndexEnforcer(index)]
    if cfg.dns.enabled:
        # DNS is served only by worker processes, so that a crash in its data
        # plane costs one worker, never intake, the register, nftables or RPZ.
        enforcers.append(WorkerPool(index, cfg.dns))
    if cfg.rpz.enabled:
        enforcers.append(RpzEnforcer.from_config(cfg))
    # Without nftables, the dry run logs what IP targets would do.
    enforcers.append(NftEnforcer(cfg.nftables) if cfg.nftables.enabled else DryRunEnforcer())
    if cfg.routes.enabled:
        enforcers.append(RoutesEnforcer(cfg.routes))
    return EnforcerSet(enforcers)


def build_prober(cfg: Config, pipeline: Pipeline) -> Prober:
    """The prober (probes.enabled): rounds, and the check of every lift."""
    swept = ConfiguredSweep(cfg, DAEMON_PROBE_RATE, log.warning)
    ports = PipelinePorts(pipeline, cfg.probes, sweep=swept)
    return Prober(cfg.probes, ports, on_close=swept.close)

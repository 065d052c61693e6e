"""A target an enforcer cannot represent: left out there, enforced everywhere else, and said.

The pipeline with a real register, the DNS index and the RPZ primary (not
listening: the zone is read directly), and a 243-character domain, which is a
legal target (intake allows 253) but too long for an RPZ owner name under
``rpz.kzgate.``. Its receipt is ``partial`` and names it; the DNS index blocks
it; the zone never holds it, so transfers stay valid; resumes, restarts,
repairs and receipts signed later all agree.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path

import pytest

from kzgate.config import RpzConfig, load_config
from kzgate.daemon import build_trust
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.enforce.set import EnforcerSet
from kzgate.keys import load_private_key
from kzgate.metrics import Metrics
from kzgate.model import Diff, State
from kzgate.pipeline import Pipeline
from kzgate.policy import PolicyIndex
from kzgate.protocol.receipts import verify_receipt
from kzgate.register.store import Register
from kzgate.rpz.enforcer import RpzEnforcer
from tests.support.kzfixtures import Regulator, write_config

LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 50]) + ".kz"  # 243 characters
V4, V6 = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1")


class Broken(DnsIndexEnforcer):
    """The DNS index, failing while ``broken`` is set (to make tasks wait as ``accepted``)."""

    def __init__(self) -> None:
        super().__init__(PolicyIndex())
        self.broken = False

    async def apply(self, diff: Diff) -> None:
        if self.broken:
            raise OSError("backend down")
        await super().apply(diff)

    async def reconcile(self, state: State) -> Diff:
        if self.broken:
            raise OSError("backend down")
        return await super().reconcile(state)


class Setup:
    def __init__(self, tmp_path: Path, pki: Path) -> None:
        self.tmp_path, self.pki = tmp_path, pki
        self.cfg = load_config(write_config(tmp_path, pki))
        self.public = load_private_key(pki / "keys/operator.key").public_key()

    def pipeline(self) -> tuple[Pipeline, Broken, RpzEnforcer]:
        dns = Broken()
        rpz = RpzEnforcer(
            RpzConfig(enabled=True, notify=()),
            block_mode="nxdomain",
            sinkhole_ipv4=V4,
            sinkhole_ipv6=V6,
        )
        pipeline = Pipeline(
            register=Register.open(self.tmp_path / "kzgate.db"),
            enforcers=EnforcerSet([dns, rpz]),
            trust=build_trust(self.cfg),
            operator_id="op-test",
            receipt_key=load_private_key(self.pki / "keys/operator.key"),
            metrics=Metrics(),
            clock=lambda: dt.datetime.now(dt.UTC),
        )
        return pipeline, dns, rpz


def gauge(pipeline: Pipeline, enforcer: str) -> float | None:
    value = pipeline.metrics.registry.get_sample_value(
        "kzgate_not_enforced_targets", {"enforcer": enforcer}
    )
    return value


async def test_partial_receipt_names_what_rpz_cannot_hold(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, pki)
    pipeline, dns, rpz = setup.pipeline()
    await pipeline.start()
    mci = Regulator(pki)
    try:
        assert (gauge(pipeline, "rpz"), gauge(pipeline, "dns")) == (0, 0)
        task = mci.restrict("1", f"domain:{LONG}", "domain:short.kz", "ip:203.0.113.7")
        with caplog.at_level(logging.INFO, logger="kzgate.pipeline"):
            answer = await pipeline.submit(mci.sign(task))
        assert answer.status == 200 and answer.body["status"] == "partial", answer.body
        assert answer.body["not_enforced"] == {"rpz": [LONG]}
        assert answer.body["applied_at"]
        verify_receipt(answer.body, setup.public)
        # Enforced where it can be: the DNS index blocks it; the zone has the rest.
        assert dns.index.lookup_name(f"www.{LONG}") is not None
        assert rpz.zone.domains == {"short.kz"}
        # Stored, and the same for a GET and for a duplicate.
        assert (await pipeline.receipt("mci", task["id"])).body == answer.body
        again = await pipeline.submit(mci.sign(task))
        assert (again.status, again.body) == (200, answer.body)
        # Alarmed: metric, log line, status summary.
        assert (gauge(pipeline, "rpz"), gauge(pipeline, "dns")) == (1, 0)
        assert (
            pipeline.metrics.registry.get_sample_value(
                "kzgate_tasks_total", {"type": "restrict", "outcome": "partial"}
            )
            == 1
        )
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("outcome=partial" in m and f"not_enforced=rpz:1({LONG})" in m for m in warned)
        assert any("enforcer rpz cannot represent 1 new target" in m for m in warned), warned
        summary = pipeline.enforcers.not_enforced_summary()
        assert summary == {"rpz": {"count": 1, "targets": [LONG]}}

        # A second instruction for the same name is partial too (the diff adds nothing).
        second = await pipeline.submit(mci.sign(mci.restrict("2", f"domain:{LONG}")))
        assert second.body["status"] == "partial" and second.body["not_enforced"] == {"rpz": [LONG]}
        assert gauge(pipeline, "rpz") == 1

        # Resumes: applied, and the RPZ enforcer never fails over the name it left out.
        serial = rpz.serial
        resumed = await pipeline.submit(mci.sign(mci.resume("2")))
        assert resumed.body["status"] == "applied" and "not_enforced" not in resumed.body
        assert rpz.serial == serial and gauge(pipeline, "rpz") == 1  # "1" still holds it
        resumed = await pipeline.submit(mci.sign(mci.resume("1")))
        assert resumed.body["status"] == "applied" and pipeline.enforcers.in_step
        assert rpz.zone.domains == set() and rpz.serial == serial + 1
        assert dns.index.lookup_name(LONG) is None
        assert gauge(pipeline, "rpz") == 0 and pipeline.enforcers.not_enforced_summary() == {}
    finally:
        await pipeline.close()


async def test_a_task_held_up_is_re_signed_partial_and_stays_settled(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    pipeline, dns, _ = setup.pipeline()
    await pipeline.start()
    mci = Regulator(pki)
    try:
        dns.broken = True
        task = mci.restrict("1", f"domain:{LONG}")
        answer = await pipeline.submit(mci.sign(task))
        assert (answer.status, answer.body["status"]) == (202, "accepted")
        assert "not_enforced" not in answer.body
        assert gauge(pipeline, "rpz") == 1  # follows the register, not the enforcers' health
        dns.broken = False
        await pipeline.enforcers.repair()
        later = await pipeline.receipt("mci", task["id"])
        assert later.body["status"] == "partial" and later.body["not_enforced"] == {"rpz": [LONG]}
        verify_receipt(later.body, setup.public)
        # Stored as partial: not "accepted" any more, so never re-signed again.
        assert await pipeline.in_register(pipeline.register.unapplied_tasks) == []
        status = await pipeline.in_register(pipeline.register.get_task_status, "mci", task["id"])
        assert status is not None and status[0] == "partial"
    finally:
        await pipeline.close()


async def test_a_restart_keeps_it_out_of_the_zone_and_signs_a_missing_receipt_partial(
    tmp_path: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, pki)
    mci = Regulator(pki)
    first, _, _ = setup.pipeline()
    await first.start()
    await first.submit(mci.sign(mci.restrict("1", f"domain:{LONG}", "domain:short.kz")))
    # A task committed but never answered (the daemon died between the two).
    task = mci.restrict("2", f"domain:x.{LONG[:-5]}.kz", "domain:other.kz")
    verified = first.register
    from kzgate.protocol.intake import verify_task

    stored = verify_task(mci.sign(task), first.trust, "op-test", dt.datetime.now(dt.UTC))
    await first.in_register(verified.record, stored, dt.datetime.now(dt.UTC))
    await first.close()

    second, dns, rpz = setup.pipeline()
    with caplog.at_level(logging.WARNING, logger="kzgate.pipeline"):
        await second.start()
    try:
        assert second.enforcers.in_step
        assert rpz.zone.domains == {"short.kz", "other.kz"}
        assert dns.index.lookup_name(LONG) is not None
        assert gauge(second, "rpz") == 2
        assert any(
            "enforcer rpz cannot represent 2 active target(s)" in r.getMessage()
            for r in caplog.records
        )
        receipt = await second.receipt("mci", task["id"])  # re-signed at start-up
        assert receipt.body["status"] == "partial"
        assert receipt.body["not_enforced"] == {"rpz": [f"x.{LONG[:-5]}.kz"]}
        verify_receipt(receipt.body, setup.public)
        # A repair (drift reported) leaves it out the same way.
        serial = rpz.serial
        second.enforcers.request_repair("rpz")
        await second.enforcers.repair()
        assert second.enforcers.in_step and rpz.serial == serial and gauge(second, "rpz") == 2
    finally:
        await second.close()

"""What Prometheus and Grafana see of kzgate: the exposition, the alert rules, the dashboard.

(a) A real in-process daemon with DNS takes a restrict and answers DNS queries;
its /metrics must pass `promtool check metrics`, carry every metric of the
contract (DESIGN.md, "Metrics (names are a contract)") and no label value that
is a domain or an address. (b, c) The alert rules pass `promtool check rules`
and their unit tests, which are themselves checked to be able to fail. (d) The
dashboard loads and queries only metrics of the contract.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from dnslib import DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.dns.fastpath import FAST
from kzgate.feed.judge import FEED_STATES
from kzgate.metrics import REFUSAL_REASONS
from tests.support import netns
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import Regulator, client_ssl, write_config

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
ALERTS = CONFIGS / "prometheus-alerts.yaml"
ALERT_TESTS = CONFIGS / "prometheus-alerts.test.yaml"
DASHBOARD = CONFIGS / "grafana-dashboard.json"

# The contract: metric family -> its type. kzgate_nft_* only when nftables is enabled.
CONTRACT = {
    "kzgate_tasks_total": "counter",
    "kzgate_task_apply_seconds": "histogram",
    "kzgate_instructions_active": "gauge",
    "kzgate_targets_active": "gauge",
    "kzgate_seq_gaps": "gauge",
    "kzgate_dns_queries_total": "counter",
    "kzgate_dns_upstream_seconds": "histogram",
    "kzgate_dns_cache_hits_total": "counter",
    "kzgate_enforcer_errors_total": "counter",
    "kzgate_enforcer_drift_repairs_total": "counter",
    "kzgate_not_enforced_targets": "gauge",
    "kzgate_build_info": "gauge",
    "kzgate_listener_refusals_total": "counter",  # issue 10: listener limits
    "kzgate_dns_worker_crashes_total": "counter",
    "kzgate_dns_workers": "gauge",
}
# Issue 12, the feed: in the contract, queried by the alerts and the dashboard. The
# daemon exports them from the puller's branch (fpull); when it is merged these move
# into CONTRACT (and "state" into LABEL_VALUES) so that the scrape checks them too.
FEED_CONTRACT = {
    "kzgate_feed_head_seq": "gauge",
    "kzgate_feed_held_seq": "gauge",
    "kzgate_feed_state": "gauge",
    "kzgate_feed_pulls_total": "counter",
}
NFT_CONTRACT = {
    "kzgate_nft_elements": "gauge",
    "kzgate_nft_dropped_packets_total": "counter",
}
# Declared always; samples only for an issuer with a feed (issue 12), so not in CONTRACT's
# has-samples check (tests/unit/feed/test_pullers.py checks the samples).
FEED_CONTRACT = {
    "kzgate_feed_head_seq": "gauge",
    "kzgate_feed_held_seq": "gauge",
    "kzgate_feed_state": "gauge",
    "kzgate_feed_pulls_total": "counter",
}
# Issue 14, probes: declared always, exported only with probes.enabled (the prober's
# collectors; tests/unit/probes/test_prober.py checks the samples). Queried by the alerts
# and the dashboard.
PROBE_CONTRACT = {
    "kzgate_probe_checks_total": "counter",
    "kzgate_probe_block_failures_total": "counter",
    "kzgate_probe_round_failures": "gauge",
    "kzgate_probe_lift_verify_seconds": "histogram",
    "kzgate_probe_lift_pending_seconds": "gauge",
    "kzgate_probe_lifts_unverified_total": "counter",
}
# Labelled counters kzgate exports at 0 for each enforcer from the start (a series that
# appears at its first event would make increase() miss that event).
ENFORCER_COUNTERS = ("kzgate_enforcer_errors_total", "kzgate_enforcer_drift_repairs_total")

# Series names a query may use: histograms as their _bucket/_sum/_count series.
QUERYABLE = {"up"} | {
    name + suffix
    for name, kind in {**CONTRACT, **NFT_CONTRACT, **FEED_CONTRACT, **PROBE_CONTRACT}.items()
    for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
}

# Every label of the exposition and the values it may take (bounded by construction).
LABEL_VALUES: dict[str, re.Pattern[str]] = {
    "type": re.compile(r"restrict|resume|unknown"),
    "outcome": re.compile(r"[a-z][a-z_]*"),  # applied, pending, ... or an error code
    "kind": re.compile(r"domain|ip|cidr|url|app|kzgate|resolver|nft|routes|connect"),
    "issuer": re.compile(r"mci|sts"),  # the issuer ids of the test config
    "enforcer": re.compile(r"dns|dns-workers|nft|dryrun"),
    "verdict": re.compile(
        r"blocked|blocked_cname|cached|forwarded|servfail|formerr|notimp|dropped"
    ),
    "family": re.compile(r"ipv4|ipv6"),
    "le": re.compile(r"\+Inf|\d+(\.\d+)?(e[+-]?\d+)?"),
    "version": re.compile(r"[0-9][0-9A-Za-z.+-]*"),
    "listener": re.compile("|".join(REFUSAL_REASONS)),
    "reason": re.compile("|".join({r for rs in REFUSAL_REASONS.values() for r in rs})),
    "engine": re.compile(r"c|python"),
    "state": re.compile("|".join(FEED_STATES)),
}

ZONE = """
www.example.kz. 300 IN A 198.51.100.10
www.allowed.kz. 300 IN A 198.51.100.20
"""
# What the restrict names; none of it may appear in the exposition.
RESTRICTED = ("domain:example.kz", "ip:203.0.113.7", "cidr:192.0.2.0/24", "url:https://x.kz/a")
SECRETS = ("example.kz", "allowed.kz", "x.kz", "203.0.113.7", "192.0.2.", "198.51.100.")


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


# -- (a) the exposition of a real daemon ----------------------------------------------


@dataclass
class Scrape:
    text: str
    families: dict[str, Any]  # name as in "# TYPE" -> prometheus_client Metric
    nft: bool


async def dns_query(port: int, name: str) -> DNSRecord:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(DNSRecord.question(name, "A").pack())
        return DNSRecord.parse(await asyncio.wait_for(answer, 5))
    finally:
        transport.close()


def tampered(body: bytes) -> bytes:
    head, payload, sig = body.split(b".")
    return b".".join([head, payload, sig[:-2] + (b"AA" if sig[-2:] != b"AA" else b"BA")])


@pytest.fixture(params=["without-nft", pytest.param("with-nft", marks=netns.required)])
def nftables(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "without-nft":
        yield {"enabled": False}
        return
    with netns.namespace_pair() as pair:
        yield {"enabled": True, "netns": pair.client, "hooks": ["output"]}


@pytest.fixture
async def scrape(tmp_path: Path, pki: Path, nftables: dict[str, Any]) -> AsyncIterator[Scrape]:
    """A daemon that took one restrict (and one forged task) and answered two queries."""
    upstream = FakeDns(ZONE)
    host, port = await upstream.start()
    cfg = load_config(
        write_config(
            tmp_path,
            pki,
            dns={"listen": ["127.0.0.1:0"], "upstreams": [f"{host}:{port}"]},
            nftables=nftables,
        )
    )
    daemon = Daemon(cfg)
    await daemon.start()
    try:
        mci = Regulator(pki)
        api = "https://{}:{}/v1/tasks".format(*daemon.bound["api"])
        headers = {"Content-Type": "application/jose"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(pki))) as s:
            async with s.post(
                api, data=mci.sign(mci.restrict("77-1", *RESTRICTED)), headers=headers
            ) as r:
                assert r.status == 200, await r.text()
            forged = tampered(mci.sign(mci.restrict("66-6", "domain:x.kz")))
            async with s.post(api, data=forged, headers=headers) as r:
                assert r.status == 401, await r.text()
        dns_port = daemon.bound["dns"][1]
        assert (await dns_query(dns_port, "www.example.kz")).header.rcode == 3  # NXDOMAIN
        assert (await dns_query(dns_port, "www.allowed.kz")).rr
        async with (
            aiohttp.ClientSession() as s,
            s.get("http://{}:{}/metrics".format(*daemon.bound["metrics"])) as r,
        ):
            assert r.status == 200
            text = await r.text()
    finally:
        await daemon.stop()
        await upstream.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client's parser drops the _total of counter families: key them as exposed.
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    by_type_name = {}
    for name, kind in declared.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        if base in families:
            by_type_name[name] = families[base]
    yield Scrape(text, by_type_name, nft=nftables["enabled"])


@needs_promtool
async def test_promtool_check_metrics_is_clean(scrape: Scrape) -> None:
    # Exit 0 and not a word: a lint warning (e.g. a counter without _total, a missing
    # HELP, a non-base unit) counts as a failure here.
    code, out = promtool("check", "metrics", stdin=scrape.text)
    assert (code, out.strip()) == (0, ""), out


async def test_every_metric_of_the_contract_is_declared(scrape: Scrape) -> None:
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape.text, re.M))
    expected = {**CONTRACT, **FEED_CONTRACT, **(NFT_CONTRACT if scrape.nft else {})}
    for name, kind in expected.items():
        assert declared.get(name) == kind, f"{name}: declared as {declared.get(name)}"
    if not scrape.nft:
        assert not [n for n in declared if n.startswith("kzgate_nft_")], declared
        assert "kzgate_nft_" not in scrape.text
    # Nothing under kzgate_ that is not in the contract (the client's _created series
    # are declared as gauges of their own in the text format; they are not kzgate's names).
    extra = {n for n in declared if n.startswith("kzgate_") and not n.endswith("_created")} - set(
        expected
    )
    assert not extra, f"not in the contract: {sorted(extra)}"


async def test_every_metric_of_the_contract_has_samples(scrape: Scrape) -> None:
    expected = {**CONTRACT, **(NFT_CONTRACT if scrape.nft else {})}
    for name in expected:
        assert scrape.families[name].samples, f"{name} has no sample"
    samples = {s.name: s for f in scrape.families.values() for s in f.samples}
    assert samples["kzgate_instructions_active"].value == 1
    assert samples["kzgate_task_apply_seconds_count"].value == 1
    assert samples["kzgate_build_info"].labels["version"]
    assert sample(scrape, "kzgate_tasks_total", type="restrict", outcome="applied") == 1
    assert sample(scrape, "kzgate_tasks_total", type="unknown", outcome="bad_signature") == 1
    assert sample(scrape, "kzgate_dns_queries_total", verdict="blocked") == 1
    assert sample(scrape, "kzgate_dns_queries_total", verdict="forwarded") == 1
    assert sample(scrape, "kzgate_targets_active", kind="domain") == 1
    assert sample(scrape, "kzgate_targets_active", kind="cidr") == 1
    # One DNS worker (the default), on the C fast path when it is built; no crash.
    assert sample(scrape, "kzgate_dns_worker_crashes_total") == 0
    assert sample(scrape, "kzgate_dns_workers", engine="c") == (FAST is not None)
    assert sample(scrape, "kzgate_dns_workers", engine="python") == (FAST is None)


def sample(scrape: Scrape, name: str, **labels: str) -> float:
    [value] = [
        s.value
        for f in scrape.families.values()
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return float(value)


async def test_enforcer_counters_are_exported_at_zero_before_the_first_event(
    scrape: Scrape,
) -> None:
    for name in ENFORCER_COUNTERS:
        enforcers = {s.labels["enforcer"] for s in scrape.families[name].samples}
        assert "dns" in enforcers, f"{name}: no series for the dns enforcer"
        assert sample(scrape, name, enforcer="dns") == 0
        if scrape.nft:
            assert "nft" in enforcers, f"{name}: no series for the nft enforcer"


async def test_no_label_value_is_a_domain_or_an_address(scrape: Scrape) -> None:
    for secret in SECRETS:
        assert secret not in scrape.text, f"{secret!r} leaked into /metrics"
    for family in scrape.families.values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert not is_address(value), f"{sample.name}{{{label}={value!r}}}"
                assert not is_domain(value), f"{sample.name}{{{label}={value!r}}}"
                allowed = LABEL_VALUES.get(label)
                assert allowed is not None, f"{sample.name}: unexpected label {label!r}"
                assert allowed.fullmatch(value), f"{sample.name}{{{label}={value!r}}}"


def is_address(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def is_domain(value: str) -> bool:
    return re.fullmatch(r"([\w-]+\.)+(xn--[\w-]+|[^\W\d_]{2,})\.?", value) is not None


def test_the_leak_scan_can_fail() -> None:
    for leak in ("198.51.100.10", "2001:db8::1", "10.0.0.0/24", "www.example.kz", "xn--80ao21a"):
        assert is_address(leak) or is_domain(leak) or leak.startswith("xn--"), leak
    assert is_domain("мысал.қаз") and is_domain("xn--80awbu3c.xn--80ao21a.")
    for fine in ("0.005", "+Inf", "0.1.0", "bad_signature", "dns-workers", "ipv4"):
        assert not (is_address(fine) or is_domain(fine)), fine


# -- (b, c) alert rules -----------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    [group] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    assert group["name"] == "kzgate"
    return [r for r in group["rules"] if "alert" in r]


REQUIRED_ALERTS = {
    "KzgateApplyLatencyHigh",
    "KzgateEnforcerErrors",
    "KzgateDriftRepairs",
    "KzgateSeqGaps",
    "KzgateDnsServfailRatio",
    "KzgateNoTasks",
    "KzgateDown",
    "KzgateTasksRefused",
    "KzgateTargetsNotEnforced",
    "KzgateDnsWorkerCrashes",
    "KzgateDnsFastPathOff",
    "KzgateFeedBehind",
    "KzgateFeedDiverged",
    "KzgateFeedRollback",
    "KzgateFeedStale",
    "KzgateFeedUnreachable",
    "KzgateProbeRestrictedAnswered",
    "KzgateLiftNotVerified",
}


@needs_promtool
def test_promtool_check_rules() -> None:
    code, out = promtool("check", "rules", str(ALERTS))
    assert code == 0, out
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


def test_alerts_are_complete_and_use_only_contract_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]
        unknown = metric_names(rule["expr"]) - QUERYABLE
        assert not unknown, f"{rule['alert']}: {unknown}"


@needs_promtool
def test_promtool_test_rules() -> None:
    code, out = promtool("test", "rules", ALERT_TESTS.name, cwd=CONFIGS)
    assert code == 0, out
    assert "SUCCESS" in out, out


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    cases: dict[str, list[list[Any]]] = {}
    for test in tests:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for name in REQUIRED_ALERTS:
        assert any(cases.get(name, [])), f"{name}: no case where it fires"
        assert any(not c for c in cases.get(name, [])), f"{name}: no case where it is silent"


@needs_promtool
@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_the_unit_tests_fail_when_an_alert_never_fires(alert: str, tmp_path: Path) -> None:
    """Each alert's unit tests against a rule file where it can never fire: they must fail."""
    [rule] = [r for r in alert_rules() if r["alert"] == alert]
    broken = dict(rule, expr="vector(1) > 2")
    (tmp_path / ALERTS.name).write_text(
        yaml.safe_dump({"groups": [{"name": "kzgate", "rules": [broken]}]}), encoding="utf-8"
    )
    doc = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    doc["tests"] = [t for t in doc["tests"] if t["name"].startswith(f"{alert}:")]
    assert doc["tests"], f"no test group named {alert}: ..."
    (tmp_path / ALERT_TESTS.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
    code, out = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert code != 0 and "FAILED" in out, out


# -- (d) the dashboard ------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return out


def test_dashboard_is_importable_as_is() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert "__inputs" not in dash  # nothing to map by hand on import
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert '$instance"' in target["expr"], f"{panel['title']}: not filtered by instance"


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), ids


def test_dashboard_queries_only_contract_metrics() -> None:
    used: set[str] = set()
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']!r} names no metric"
            assert not names - QUERYABLE, f"{panel['title']}: {names - QUERYABLE}"
            used |= names
    # And it shows every metric of the contract.
    shown = {n.removesuffix("_bucket") for n in used}
    assert set(CONTRACT) | set(NFT_CONTRACT) <= shown, set(CONTRACT) | set(NFT_CONTRACT) - shown


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query, as recording rules, with Grafana's variables filled in."""
    grafana = {"$instance": ".*", "$__rate_interval": "2m", "$__range": "1d"}
    rules = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr!r}"
            rules.append({"record": f"kzgate:panel_{panel['id']}_{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}), "utf-8")
    code, out = promtool("check", "rules", str(path))
    assert code == 0, out


PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool"}
PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (enough PromQL for our queries)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def test_metric_names_finds_what_it_should() -> None:
    assert metric_names(
        'sum by (le) (rate(kzgate_task_apply_seconds_bucket{instance=~"$instance"}[5m]))'
    ) == {"kzgate_task_apply_seconds_bucket"}
    assert metric_names(
        "up == 1 unless on (job) (x_total offset 7d) or vector(0) and bogus_metric"
    ) == {"up", "x_total", "bogus_metric"}

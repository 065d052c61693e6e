from kzgate.status import render

STATS = {
    "instructions": {"active": 3, "resumed": 1},
    "targets": {"domain": 1200, "ip": 2},
    "last_task": {
        "iss": "mci",
        "id": "t-9",
        "type": "restrict",
        "received_at": "2026-11-22T10:15:00.000000+05:00",
        "applied_at": "2026-11-22T10:15:00.004200+05:00",
    },
}


def test_running_daemon_summary() -> None:
    live = {
        "ready": True,
        "version": "0.1.0",
        "enforcers": {"dns": "ok", "nft": "repairing"},
        "nft": {"elements": {"ipv4": 10, "ipv6": 1}, "dropped_packets": {"ipv4": 7}},
    }
    text = render(STATS, {"mci": [4, 5], "sts": []}, live)
    assert "running, ready" in text
    assert "dns ok   nft repairing" in text
    assert "ipv4: 10 prefixes, 7 dropped" in text
    assert "active 3   resumed 1   pending 0" in text
    assert "domain 1,200   ip 2   cidr 0" in text
    assert "mci: 2 missing (4, 5)" in text and "sts" not in text
    assert "applied in 4.2 ms" in text


def test_stopped_daemon_and_empty_register() -> None:
    text = render({}, {}, None)
    assert "NOT RUNNING" in text
    assert "seq gaps      none" in text and "last task     none yet" in text


def test_unapplied_last_task_is_called_out() -> None:
    stats = dict(STATS, last_task=dict(STATS["last_task"], applied_at=None))  # type: ignore[arg-type]
    assert "NOT yet applied everywhere" in render(stats, {}, None)


def test_targets_an_enforcer_leaves_out_are_listed() -> None:
    long_name = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 50 + ".kz"
    live = {
        "ready": True,
        "enforcers": {"dns": "ok", "rpz": "ok"},
        "not_enforced": {"rpz": {"count": 3, "targets": [long_name, "x." + long_name[2:]]}},
    }
    lines = render(STATS, {}, live).splitlines()
    at = lines.index("not enforced  rpz: 3 target(s), enforced everywhere else")
    assert lines[at + 1 : at + 4] == [
        f"                {long_name}",
        f"                x.{long_name[2:]}",
        "                … and 1 more",
    ]
    assert "not enforced  none" in render(STATS, {}, dict(live, not_enforced={}))
    # an older daemon without the field, or none running: no claim either way
    assert "not enforced" not in render(STATS, {}, {"ready": True})
    assert "not enforced" not in render(STATS, {}, None)


def dns_live(fast_path: str, *workers: tuple[str, str, int]) -> dict[str, object]:
    return {
        "ready": True,
        "dns": {
            "fast_path": fast_path,
            "workers": [
                {"slot": i, "pid": 100 + i, "engine": e, "state": st, "crashes": c}
                for i, (e, st, c) in enumerate(workers)
            ],
        },
    }


def test_dns_workers_on_the_c_fast_path() -> None:
    text = render({}, {}, dns_live("built", ("c", "up", 0)))
    assert "dns           1 worker   C fast path active   0 crashes" in text


def test_dns_workers_moved_to_python_and_down_are_called_out() -> None:
    live = dns_live("built", ("c", "up", 1), ("python", "up", 5), ("c", "down", 2))
    line = next(x for x in render({}, {}, live).splitlines() if x.startswith("dns "))
    assert "3 workers" in line
    assert "C fast path active on 2, OFF on 1 (worker 1: pure Python after repeated" in line
    assert "8 crashes" in line and "not serving: worker 2 down" in line


def test_dns_without_the_c_module_says_so() -> None:
    text = render({}, {}, dns_live("not built", ("python", "up", 0), ("python", "up", 0)))
    assert "2 workers   pure Python: the C fast path is NOT BUILT" in text


def test_an_enforcers_own_fields_are_shown_as_they_come() -> None:
    """Enforcer.status of an enforcer render() does not know: one line, its JSON."""
    live = {
        "ready": True,
        "enforcers": {"dns": "ok", "routes": "ok"},
        "routes": {"announced": 3, "peers": ["a"]},
    }
    text = render(STATS, {}, live)
    assert 'routes        {"announced": 3, "peers": ["a"]}' in text.splitlines()
    # the fields it knows are not shown twice, as JSON
    assert '{"dns": "ok", "routes": "ok"}' not in text
    assert not [line for line in text.splitlines() if line.split()[0] in ("ready", "version")]


def test_each_issuers_feed_is_shown_with_what_is_wrong_in_capitals() -> None:
    live = {
        "ready": True,
        "feeds": {
            "sts": {
                "state": "diverged",
                "head_seq": 40,
                "held_seq": 40,
                "gaps": 0,
                "last_pull": "2026-11-22T10:15:00+05:00",
                "diverged_at": 17,
                "error": "seq 17: the feed's payload differs from the one held",
            },
            "mci": {
                "state": "in_sync",
                "head_seq": 1234,
                "held_seq": 1234,
                "gaps": 0,
                "last_pull": "2026-11-22T10:15:00+05:00",
                "diverged_at": None,
                "error": "",
            },
            "gov": {
                "state": "unreachable",
                "head_seq": None,
                "held_seq": 3,
                "gaps": 0,
                "last_pull": None,
                "diverged_at": None,
                "error": "unreachable: refused",
            },
        },
    }
    lines = render(STATS, {}, live).splitlines()
    feeds = [line for line in lines if line.startswith("feed ")]
    assert feeds == [
        "feed gov      UNREACHABLE   head none yet   held 3 without a gap (0 missing)   "
        "last pull never   unreachable: refused",
        "feed mci      in_sync   head 1234   held 1234 without a gap (0 missing)   "
        "last pull 2026-11-22T10:15:00+05:00",
        "feed sts      DIVERGED   head 40   held 40 without a gap (0 missing)   "
        "last pull 2026-11-22T10:15:00+05:00   first differing seq 17   "
        "seq 17: the feed's payload differs from the one held",
    ]
    assert not any(line.startswith("feeds") for line in lines)  # not dumped as raw JSON
    assert not [line for line in render(STATS, {}, {"feeds": {}}).splitlines() if "feed" in line]


def test_set_only_mode_prints_the_rules_and_the_sets_no_rule_matches() -> None:
    rules = ["ip daddr @blocked_hosts_v4 counter drop", "ip daddr @blocked_v4 counter drop"]
    nft = {"elements": {"ipv4": 2}, "operator_rules": rules, "unmatched_sets": []}
    lines = render(STATS, {}, {"ready": True, "nft": nft}).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("nft rules"))
    assert lines[at + 1 : at + 3] == [f"                {rule}" for rule in rules]
    assert "NO RULE" not in "\n".join(lines)
    half = dict(nft, unmatched_sets=["blocked_hosts_v4"])
    text = render(STATS, {}, {"ready": True, "nft": half})
    assert "NO RULE looks up blocked_hosts_v4: what they hold is NOT dropped" in text
    # full mode: kzgate's own rules, nothing to tell the operator
    assert "nft rules" not in render(STATS, {}, {"ready": True, "nft": {"elements": {}}})


def test_probes_show_the_last_round_its_failures_and_pending_lifts() -> None:
    live = {
        "ready": True,
        "probes": {
            "enabled": True,
            "last_round": {
                "at": "2026-11-22T10:16:00+05:00",
                "checks": 60,
                "failures": {"10.0.0.53:53": 1, "127.0.0.1:5353": 0},
                "unreachable": {"10.0.0.54:53": 20},
                "failed": [
                    {
                        "target": "a.kz",
                        "source": "domain:a.kz",
                        "place": "10.0.0.53:53",
                        "expect": "blocked",
                        "observed": "A 192.0.2.7",
                        "instruction": "mci No. 77-1 of 2026-11-01",
                    }
                ],
            },
            "pending_lifts": [
                {
                    "instruction": "mci No. 5 of 2026-11-01",
                    "applied_at": "2026-11-22T10:15:58+05:00",
                }
            ],
            "recent_verified": [{"instruction": "mci No. 4 of 2026-11-01", "seconds": 1.25}],
        },
    }
    lines = render(STATS, {}, live).splitlines()
    probes = [line for line in lines if line.startswith(("probes", "lift", "    "))]
    assert probes == [
        "probes        last round 2026-11-22T10:16:00+05:00: 60 checks   "
        "10.0.0.53:53 FAILED 1   127.0.0.1:5353 ok",
        "                a.kz at 10.0.0.53:53: expected blocked, observed A 192.0.2.7 "
        "(mci No. 77-1 of 2026-11-01)",
        "lift pending  mci No. 5 of 2026-11-01: applied 2026-11-22T10:15:58+05:00, "
        "not yet verified at every place",
        "lift verified mci No. 4 of 2026-11-01: 1.25 s after its receipt",
    ]
    assert "probes        off" in render(STATS, {}, {"probes": {"enabled": False}})

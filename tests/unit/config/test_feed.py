"""``issuers[].feed``: the DESIGN.md keys exactly, defaults, and every error naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzgate.config import ConfigError, FeedConfig, load_config, missing_files

# The feed block of DESIGN.md ("Keys for the capabilities being added"), verbatim.
DESIGN_FEED = """\
    feed:                             # optional: pull this issuer's log (task-protocol.md §6)
      url: https://127.0.0.1:9443/mci # base URL: {url}/head, {url}/tasks
      ca: tls/feed-ca.crt             # CA of the feed server's certificate
      client_cert: tls/client.crt     # optional: mutual TLS
      client_key: tls/client.key
      interval: 30                    # seconds between pulls
      wait: 0                         # long-poll seconds; 0 = plain polling
"""

BASE = """\
operator: {id: op, receipt_key: k/op.key}
api: {tls_cert: t/s.crt, tls_key: t/s.key}
issuers:
  - id: mci
    keys: [{kid: k1, public_key: k/k1.pub}]
"""


def load(tmp_path: Path, feed: str) -> FeedConfig | None:
    path = tmp_path / "conf" / "kzgate.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(BASE + feed, encoding="utf-8")
    return load_config(path).issuers[0].feed


def errors(tmp_path: Path, feed: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, feed)
    return info.value.errors


def test_the_design_example_means_exactly_what_it_says(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    assert load(tmp_path, DESIGN_FEED) == FeedConfig(
        url="https://127.0.0.1:9443/mci",
        ca=conf / "tls/feed-ca.crt",  # relative to the config file, like every path
        client_cert=conf / "tls/client.crt",
        client_key=conf / "tls/client.key",
        interval=30.0,
        wait=0.0,
    )


def test_no_feed_by_default_and_only_url_and_ca_are_required(tmp_path: Path) -> None:
    assert load(tmp_path, "") is None
    feed = load(tmp_path, "    feed: {url: 'https://feed.example.kz/v1/mci/', ca: /etc/ca.pem}\n")
    assert feed == FeedConfig(url="https://feed.example.kz/v1/mci", ca=Path("/etc/ca.pem"))
    assert (feed.interval, feed.wait, feed.client_cert, feed.client_key) == (30.0, 0.0, None, None)
    assert errors(tmp_path, "    feed: {}\n") == [
        f"{tmp_path / 'conf/kzgate.yaml'}: issuers[0].feed.url: required",
        f"{tmp_path / 'conf/kzgate.yaml'}: issuers[0].feed.ca: required",
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9443/mci", "must be an https URL"),
        ("ftp://x/mci", "must be an https URL"),
        ("127.0.0.1:9443/mci", "must be an https URL"),
        ("https:///mci", "must name a host"),
        ("https://u:p@feed.kz/mci", "user or password"),
        ("https://feed.kz/mci?x=1", "no query or fragment"),
        ("https://feed.kz/mci#top", "no query or fragment"),
        ("https://feed.kz:99999/mci", "https URL"),
        ("https://feed.kz:0/mci", "https URL"),
        ("https://feed.kz/m ci", "https URL"),
        ("", "non-empty string"),
    ],
)
def test_url_must_be_https_with_a_host(tmp_path: Path, url: str, says: str) -> None:
    [error] = errors(tmp_path, f"    feed: {{url: '{url}', ca: ca.pem}}\n")
    assert error.startswith(f"{tmp_path / 'conf/kzgate.yaml'}: issuers[0].feed.url: ")
    assert says in error


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ("interval: 0", "interval", "must be a number > 0"),
        ("interval: -1", "interval", "must be a number > 0"),
        ("interval: true", "interval", "must be a number > 0"),
        ("wait: -0.5", "wait", "must be a number >= 0"),
        ("wait: '5'", "wait", "must be a number >= 0"),
        ("client_cert: c.crt", "client_key", "both or neither"),
        ("client_key: c.key", "client_cert", "both or neither"),
        ("intervall: 5", "intervall", "did you mean 'interval'?"),
    ],
)
def test_each_error_names_the_file_and_the_key(
    tmp_path: Path, extra: str, key: str, says: str
) -> None:
    [error] = errors(tmp_path, f"    feed: {{url: 'https://f.kz/mci', ca: ca.pem, {extra}}}\n")
    assert error.startswith(f"{tmp_path / 'conf/kzgate.yaml'}: issuers[0].feed.{key}: ")
    assert says in error


def test_a_feed_that_is_not_a_mapping(tmp_path: Path) -> None:
    got = errors(tmp_path, "    feed: https://f.kz/mci\n")
    assert got[0].endswith("issuers[0].feed: must be a mapping (got 'https://f.kz/mci')")
    [error] = errors(tmp_path, "    feed: {url: 'https://f.kz/mci', ca: ''}\n")
    assert error.endswith("issuers[0].feed.ca: must be a non-empty string (got '')")


def test_long_poll_and_interval_take_fractions(tmp_path: Path) -> None:
    feed = load(
        tmp_path, "    feed: {url: 'https://f.kz/mci', ca: ca.pem, interval: 0.5, wait: 25}\n"
    )
    assert feed is not None and (feed.interval, feed.wait) == (0.5, 25.0)


def test_missing_files_names_the_feeds_files(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "kzgate.yaml"
    load(tmp_path, DESIGN_FEED)
    cfg = load_config(path)
    missing = [line for line in missing_files(cfg) if ".feed." in line]
    conf = tmp_path / "conf"
    assert missing == [
        f"{path}: issuers[0].feed.ca: no such file: {conf / 'tls/feed-ca.crt'}",
        f"{path}: issuers[0].feed.client_cert: no such file: {conf / 'tls/client.crt'}",
        f"{path}: issuers[0].feed.client_key: no such file: {conf / 'tls/client.key'}",
    ]

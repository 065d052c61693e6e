"""The configuration file: read, parsed, checked, and the files it names looked for.

Key files are only named here, never read: ``check-config`` must work on a host
where the keys are not yet installed. ``missing_files`` says which are absent.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from kzgate.config.model import Config
from kzgate.config.reader import ConfigError
from kzgate.config.sections import parse_config


def load_config(path: Path | str) -> Config:
    """Read and check a configuration file; raise ConfigError listing every error found."""
    source = Path(path)
    data, problems = _read_yaml(source)
    try:
        cfg = parse_config(data, source)
    except ConfigError as exc:
        raise ConfigError(problems + exc.errors) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def missing_files(cfg: Config) -> list[str]:
    """Every file the configuration names that is not there, naming key and file."""
    named: list[tuple[str, Path | None]] = [
        ("operator.receipt_key", cfg.operator.receipt_key),
        ("api.tls_cert", cfg.api.tls_cert),
        ("api.tls_key", cfg.api.tls_key),
        ("api.client_ca", cfg.api.client_ca),
    ]
    if cfg.rpz.enabled and cfg.rpz.tsig is not None:
        named.append(("rpz.tsig.secret_file", cfg.rpz.tsig.secret_file))
    for i, issuer in enumerate(cfg.issuers):
        for j, issuer_key in enumerate(issuer.keys):
            named.append((f"issuers[{i}].keys[{j}].public_key", issuer_key.public_key))
        if issuer.feed is not None:
            named.append((f"issuers[{i}].feed.ca", issuer.feed.ca))
            named.append((f"issuers[{i}].feed.client_cert", issuer.feed.client_cert))
            named.append((f"issuers[{i}].feed.client_key", issuer.feed.client_key))
    out: list[str] = []
    for name, path in named:
        if path is not None and not path.is_file():
            problem = "not a regular file" if path.exists() else "no such file"
            out.append(f"{cfg.source}: {name}: {problem}: {path}")
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate mapping keys, which plain YAML silently drops."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                seen.add(ident)
        return super().construct_mapping(node, deep)


def _read_yaml(source: Path) -> tuple[object, list[str]]:
    """The document, and a message for each duplicate key (parsing goes on past them)."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    dups = [f"{source}: line {line}: duplicate key {key!r}" for line, key in loader.duplicates]
    return data, dups

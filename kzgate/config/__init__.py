"""The configuration file: YAML read into frozen dataclasses.

model.py    what a configuration is (the dataclasses, with every default)
hostport.py HostPort, the socket address the file writes as host:port
reader.py   one YAML mapping read with every error collected (file and key named)
values.py   the value converters: a YAML value checked, or why not
sections.py each section read into its dataclass; parse_config
load.py     load_config (the file), missing_files (the key files it names)
"""

from kzgate.config.hostport import HostPort
from kzgate.config.load import load_config, missing_files
from kzgate.config.model import (
    BLOCK_MODES,
    LOG_FORMATS,
    LOG_LEVELS,
    NFT_ACTIONS,
    NFT_HOOKS,
    NFT_MODES,
    ROUTE_TYPES,
    RPZ_ACTIONS,
    TSIG_ALGORITHMS,
    TSIG_DEFAULT_ALGORITHM,
    ApiConfig,
    BlockMode,
    Config,
    DnsConfig,
    DnsTcpConfig,
    FeedConfig,
    IssuerConfig,
    IssuerKeyConfig,
    LogConfig,
    LogFormat,
    LogLevel,
    MetricsConfig,
    NftAction,
    NftConfig,
    NftMode,
    OperatorConfig,
    ProbesConfig,
    RateLimitConfig,
    RegisterConfig,
    RoutesConfig,
    RouteType,
    RpzActionSetting,
    RpzConfig,
    TsigConfig,
)
from kzgate.config.reader import ConfigError
from kzgate.config.sections import parse_config
from kzgate.config.values import RPZ_ORIGIN_MAX_CHARS

__all__ = [
    "BLOCK_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "NFT_ACTIONS",
    "NFT_HOOKS",
    "NFT_MODES",
    "ROUTE_TYPES",
    "RPZ_ACTIONS",
    "RPZ_ORIGIN_MAX_CHARS",
    "TSIG_ALGORITHMS",
    "TSIG_DEFAULT_ALGORITHM",
    "ApiConfig",
    "BlockMode",
    "Config",
    "ConfigError",
    "DnsConfig",
    "DnsTcpConfig",
    "FeedConfig",
    "HostPort",
    "IssuerConfig",
    "IssuerKeyConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "MetricsConfig",
    "NftAction",
    "NftConfig",
    "NftMode",
    "OperatorConfig",
    "ProbesConfig",
    "RateLimitConfig",
    "RegisterConfig",
    "RouteType",
    "RoutesConfig",
    "RpzActionSetting",
    "RpzConfig",
    "TsigConfig",
    "load_config",
    "missing_files",
    "parse_config",
]

"""kzgate: enforce signed restrict/resume orders in DNS and nftables."""

__version__ = "0.1.0"

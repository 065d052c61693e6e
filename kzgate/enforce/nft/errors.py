"""What goes wrong between kzgate and nf_tables."""

from __future__ import annotations


class NftError(Exception):
    """nftables refused a change, or could not be reached."""


class NftDrift(NftError):
    """The kernel's sets are not what kzgate last wrote (an element missing or already there)."""

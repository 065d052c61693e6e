"""Proof of enforcement: probes that check each block holds and each lift took.

Pure core: ``model`` (values), ``sample`` (what to check each round),
``verdict`` (what an answer means), ``report`` (the signed evidence).
Edges: ``dnsprobe`` (UDP queries), ``kernel`` (nftables and routes point
queries, connect()), ``sweep`` (runs checks at a bounded rate), ``prober``
(the daemon's rounds and post-resume verification).
"""

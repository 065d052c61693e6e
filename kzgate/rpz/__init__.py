"""The RPZ primary: the effective state as a Response Policy Zone, served by zone transfer.

Pure: ``zone`` (content, records), ``journal`` (IXFR history), ``wire``
(messages, TSIG framing), ``answer`` (ACL and what to send). Edges: ``xfr``
(listeners), ``notify`` (NOTIFY sender), ``enforcer`` (the Enforcer), ``export``.
"""

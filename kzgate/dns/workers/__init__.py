"""DNS in forked worker processes: the control process never answers a query itself.

``dns.workers`` (default 1) resolvers are forked after the start-up reconcile,
so each begins with a copy-on-write copy of an index that already equals the
register's state. From then on the control process sends every diff to every
worker over a socketpair and waits for each to acknowledge it: a receipt says
"applied" only when all of them answer with the new policy.

The control process binds every worker's UDP and TCP sockets itself (one pair
per worker and address, sharing the port with SO_REUSEPORT when there are
several workers) and keeps them: a worker that dies takes no socket with it, so
what arrives until its replacement is up waits in the kernel's queues and is
answered then, instead of being refused or lost. The replacement is forked
from the control process's index, which already holds every diff sent so far,
so the dead one's unacknowledged diffs count as delivered once it is up.
Crashes are counted and logged; repeated ones back off and move that worker
to the pure-Python engine (crashes.py).

- ``pool``: WorkerPool, the enforcer: fork, broadcast with acks, replace;
- ``handle``: the control process's side of one worker (its acks, its crash report);
- ``handover``: the listening sockets, bound here and adopted by a worker;
- ``child``: the worker process: its start and its main loop;
- ``frames``: what the two say over their socketpair;
- ``status``: what `kzgate status` and the metrics say about the workers.
"""

from kzgate.dns.workers.handover import WorkerStartError
from kzgate.dns.workers.pool import WorkerPool

__all__ = ["WorkerPool", "WorkerStartError"]

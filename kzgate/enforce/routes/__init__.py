"""The routes enforcer: kzgate's own kernel routing table, for BIRD to announce (issue 13).

- ``enforcer``: RoutesEnforcer, the Enforcer that keeps the table equal to the state;
- ``netlink``: the writer socket: acked, paced chunks of route changes; the strict dump;
- ``encode``: route messages and the dump request, as bytes;
- ``decode``: routes from dump answers and notifications;
- ``drift``: the monitor that hears only others' changes of our routes;
- ``wire``: the kernel's numbers.
"""

from kzgate.enforce.routes.enforcer import RoutesEnforcer
from kzgate.enforce.routes.errors import RoutesError, RoutesUnknown

__all__ = ["RoutesEnforcer", "RoutesError", "RoutesUnknown"]

"""The node's control endpoint: one handler per request a worker, a client or a peer sends.

Kept apart from the routing loop in :mod:`gorilix.node`: these run on the node thread when a message reaches actor id 0.
Each handler gets the sender's identity, its actor id and the ask's
correlation id, then the request's arguments; what it returns answers an
ask, unless it returns :data:`DEFER` and answers later itself.

The handlers are grouped by who asks: :mod:`.actors` (workers and the actor
API), :mod:`.supervisors`, :mod:`.cluster` (peer nodes) and :mod:`.tools`
(operators and the CLI).
"""

from __future__ import annotations

from typing import Any

from gorilix.control import actors, cluster, supervisors, tools
from gorilix.control.base import DEFER
from gorilix.control.tools import check_recoveries, finish_reload

HANDLERS: dict[str, Any] = {**actors.HANDLERS, **supervisors.HANDLERS, **cluster.HANDLERS, **tools.HANDLERS}

__all__ = ["DEFER", "HANDLERS", "check_recoveries", "finish_reload"]

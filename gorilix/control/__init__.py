"""The node's control endpoint: one handler per request a worker, a client or a peer sends.

Kept apart from the node's core (:mod:`gorilix.node_core`), which dispatches
to them when a message reaches actor id 0. Each handler gets the core and
who asked (:mod:`.base` says more); what it returns answers an ask, unless
it returns :data:`DEFER` and answers later itself.

The handlers are grouped by who asks: :mod:`.actors` (workers and the actor
API), :mod:`.supervisors`, :mod:`.cluster` (peer nodes) and :mod:`.tools`
(operators and the CLI).
"""

from __future__ import annotations

from typing import Any

from gorilix.control import actors, cluster, supervisors, tools

HANDLERS: dict[str, Any] = {**actors.HANDLERS, **supervisors.HANDLERS, **cluster.HANDLERS, **tools.HANDLERS}
#: Handlers of the workers' reports, by the report's type (gorilix.workers.protocol).
REPORTS: dict[type[Any], Any] = {**actors.REPORTS, **tools.REPORTS}

__all__ = ["HANDLERS", "REPORTS"]

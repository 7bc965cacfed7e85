"""What every control handler shares."""

from __future__ import annotations

import logging

log = logging.getLogger("gorilix.node")


class _Defer:
    """A control handler's marker: the answer comes later."""


#: Returned by a handler that answers the ask later itself.
DEFER = _Defer()

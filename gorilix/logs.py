"""Warnings and errors reach stderr by default, in one format, from every process of a system.

The node process and its workers write ``TIME node NAME LEVEL logger:
message`` and ``TIME worker N LEVEL logger: message`` to the program's
stderr. The program's own ``gorilix`` loggers would print nothing (a library
leaves logging to its application, and ``gorilix`` has only a NullHandler),
so a warning such as "did not answer stop" would vanish. An ``ActorSystem``
therefore gives the ``gorilix`` logger a stderr handler in the same format
(``TIME program LEVEL logger: message``), which stands aside as soon as the
program configures logging itself (the root logger has a handler): then the
records go to the program's handlers only, once.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s program %(levelname)s %(name)s: %(message)s"


class _UntilConfigured(logging.Filter):
    """Lets records through while the program has configured no logging of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


class _DefaultHandler(logging.Handler):
    """The handler :func:`install` adds (found again by its type, never added twice).

    It writes to whatever ``sys.stderr`` is when a record comes (a test or a
    program may replace it), as logging's own last-resort handler does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self.addFilter(_UntilConfigured())
        self.owned_level: int | None = None  # the level it gave the gorilix logger, if it set one

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # (a closed stderr, say: logging's own rule is never to raise)
            self.handleError(record)


def install(level: int) -> None:
    """Give the program's ``gorilix`` logger its stderr handler at ``level`` (the system's ``log_level``).

    The logger's own level is set too, so that INFO asked for gets through,
    unless the program set that level itself.
    """
    logger = logging.getLogger("gorilix")
    handler = next((h for h in logger.handlers if isinstance(h, _DefaultHandler)), None)
    if handler is None:
        handler = _DefaultHandler()
        logger.addHandler(handler)
    handler.setLevel(level)
    if logger.level in (logging.NOTSET, handler.owned_level):
        logger.setLevel(level)
        handler.owned_level = level

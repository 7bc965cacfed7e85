"""Gorilix workers: everything about the processes that host actors.

The ``Actor`` base class and its context, mailboxes and the scheduler inside a
worker, the worker's main loop and the pool that spawns, watches and respawns
worker processes. Builds on ``transport``; knows nothing of ``gorilix``.
"""

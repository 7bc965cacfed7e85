"""Gorilix transport: the wire.

The lowest layer. It owns the msgpack codec and its extension types, the frame
layout, addresses, socket set-up and the router's forwarding table. It knows
nothing about actors and imports nothing of ours; ``workers`` and ``gorilix``
build on it.
"""

"""SWIM's wire format: message types, framing constants, and the checks every datagram passes.

Everything here is pure and must never raise on input from the network: a
check answers True or False, and the engine drops what fails.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

import msgpack

from gorilix.transport.describe import shown

PROTOCOL_VERSION = 2
#: Encoded size limit of a member's metadata: it travels in every alive
#: message and every state record, so it must stay well inside a datagram.
META_MAX_BYTES = 512
NAME_MAX = 255
#: The largest UDP payload over IPv4; anything longer cannot be a datagram.
MAX_DATAGRAM = 65507

PING, PING_REQ, ACK, NACK, ALIVE, SUSPECT, DEAD, LEAVE, PUSH_PULL, STATE = range(1, 11)

U32 = 1 << 32
U64 = 1 << 64
VERSION_BYTES = msgpack.packb(PROTOCOL_VERSION)
# Room for the outer array header (at most 3 bytes for array16) and the version.
ENVELOPE = 3 + len(VERSION_BYTES)
# Once less than this is left in a datagram no update will fit any more.
MIN_UPDATE = 12


# -- validation of wire input (must never raise) ------------------------------


def _plain(value: object, depth: int) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None or kind is bytes:
        return True
    if depth <= 0:
        return False
    if kind is list:
        return all(_plain(item, depth - 1) for item in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(
            (type(key) is str or type(key) is int) and _plain(item, depth - 1)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    return False


def valid_meta(value: object) -> bool:
    if type(value) is not dict:
        return False
    if not value:
        return True
    if len(value) > 64:  # type: ignore[arg-type]
        return False
    return all(
        type(key) is str and len(key) <= NAME_MAX and _plain(item, 8)
        for key, item in value.items()  # type: ignore[attr-defined]
    )


def is_name(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= NAME_MAX  # type: ignore[arg-type]


def is_seq(value: object) -> bool:
    return type(value) is int and 0 <= value < U64  # type: ignore[operator]


def is_inc(value: object) -> bool:
    return type(value) is int and 0 <= value < U64  # type: ignore[operator]


def is_port(value: object) -> bool:
    return type(value) is int and 0 < value < 65536  # type: ignore[operator]


def _v_ping(m: list[Any]) -> bool:
    return len(m) == 3 and is_seq(m[1]) and is_name(m[2])


def _v_ping_req(m: list[Any]) -> bool:
    return (len(m) == 6 and is_seq(m[1]) and is_name(m[2]) and is_name(m[3])
            and is_port(m[4]) and type(m[5]) is bool)


def _v_ack(m: list[Any]) -> bool:
    return len(m) == 2 and is_seq(m[1])


def _v_alive(m: list[Any]) -> bool:
    return (len(m) == 6 and is_name(m[1]) and is_inc(m[2]) and is_name(m[3])
            and is_port(m[4]) and valid_meta(m[5]))


def _v_suspect(m: list[Any]) -> bool:
    return len(m) == 4 and is_name(m[1]) and is_inc(m[2]) and is_name(m[3])


def _v_leave(m: list[Any]) -> bool:
    return len(m) == 3 and is_name(m[1]) and is_inc(m[2])


def _v_push_pull(m: list[Any]) -> bool:
    return len(m) == 4 and type(m[1]) is int and 0 <= m[1] < U32 and type(m[2]) is bool and is_name(m[3])


def _v_record(r: object) -> bool:
    return (type(r) is list and len(r) == 6 and is_name(r[0]) and is_name(r[1])  # type: ignore[arg-type]
            and is_port(r[2]) and is_inc(r[3]) and type(r[4]) is int  # type: ignore[index]
            and 0 <= r[4] <= 3 and valid_meta(r[5]))  # type: ignore[index,operator]


def _v_state(m: list[Any]) -> bool:
    return (len(m) == 7 and type(m[1]) is int and 0 <= m[1] < U32 and type(m[2]) is bool
            and is_name(m[3]) and type(m[4]) is int and type(m[5]) is int and 0 <= m[4] < m[5] <= 0xFFFF
            and type(m[6]) is list and all(_v_record(r) for r in m[6]))


VALIDATORS: dict[int, Callable[[list[Any]], bool]] = {
    PING: _v_ping, PING_REQ: _v_ping_req, ACK: _v_ack, NACK: _v_ack, ALIVE: _v_alive,
    SUSPECT: _v_suspect, DEAD: _v_suspect, LEAVE: _v_leave, PUSH_PULL: _v_push_pull, STATE: _v_state,
}


# -- a Gorilix node's metadata -----------------------------------------------------
#
# The engine carries any plain metadata. A node announces these fields in its
# own (gorilix.cluster.bridge) and reads them back from its peers' copies, so
# the cluster provider hands this check to its engine: a member announced with
# a wrong value here is dropped before it enters the member table, and so is
# never gossiped on (see SwimEngine's ``meta_check``). Fields not named here
# pass: a newer node may announce more.

#: Most worker processes a node may announce.
MAX_WORKERS = 1 << 16
#: Highest load average a node may announce.
MAX_LOAD = 1e6
#: Longest router endpoint ("tcp://255.255.255.255:65535" is 27 characters).
ROUTER_MAX = 64
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def router_problem(value: object) -> str | None:
    """Why ``value`` is not a router endpoint a node announces, or None when it is one.

    Nodes announce ``tcp://IPV4:PORT`` (ClusterConfig.advertised resolves the
    host first; gossip itself is IPv4). A host name is refused: ZeroMQ would
    look it up in its I/O thread, on a peer's say-so. So is anything else
    ZeroMQ would read differently (``tcp://a:1;b:2`` names a source address)
    or refuse (``tcp://a b:1`` raises in connect).
    """
    if type(value) is not str:
        return f"router must be a str 'tcp://IPV4:PORT', got {type(value).__name__}"
    endpoint: str = value  # type: ignore[assignment]
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    if len(endpoint) > ROUTER_MAX or not endpoint.startswith("tcp://") or not sep:
        return f"router {shown(endpoint)} is not 'tcp://IPV4:PORT'"
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return f"router {shown(endpoint)}: {shown(host)} is not an IPv4 address"
    if address.is_unspecified or address.is_multicast:
        return f"router {shown(endpoint)}: {host} is not an address a node can be reached at"
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and port[0] != "0" and int(port) <= 65535):
        return f"router {shown(endpoint)}: port {shown(port)} is not a number in 1..65535"
    return None


def node_meta_problem(meta: object) -> str | None:
    """Why a node's gossip metadata cannot be used, naming the field first; None when it can. Never raises."""
    if type(meta) is not dict:
        return f"metadata must be a dict, got {type(meta).__name__}"
    fields: dict[str, Any] = meta  # type: ignore[assignment]
    if "router" in fields:
        problem = router_problem(fields["router"])
        if problem is not None:
            return problem
    if "workers" in fields:
        workers = fields["workers"]
        if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
            return f"workers must be an int in 1..{MAX_WORKERS}, got {shown(workers)}"
    if "load" in fields:
        load = fields["load"]
        if type(load) not in (int, float) or not math.isfinite(load) or not 0 <= load <= MAX_LOAD:
            return f"load must be a number in 0..{MAX_LOAD:g}, got {shown(load)}"
    if "curve" in fields:
        key = fields["curve"]
        if key is not None and (type(key) is not str or len(key) != 40 or not _Z85.issuperset(key)):
            return f"curve must be None or a Z85 public key (40 characters), got {shown(key)}"
    return None


def array_header(count: int) -> bytes:
    if count < 16:
        return _SMALL_HEADERS[count]
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


_SMALL_HEADERS = [bytes((0x90 | i,)) for i in range(16)]

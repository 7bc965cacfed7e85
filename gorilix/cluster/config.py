"""ClusterConfig: every field of the Go guide's config, each one in effect."""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gorilix.cluster.keyfile import MIN_SECRET_BYTES, default_secret
from gorilix.cluster.keyfile import (
    read_secret_file as read_secret_file,  # (re-exported: one reader)
)
from gorilix.cluster.wire import NAME_MAX
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError


def parse_hostport(text: str, default_port: int, what: str = "address") -> tuple[str, int]:
    """'host:port', 'host' or '[v6]:port' -> (host, port), with a clear error."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ClusterError(f"bad {what} {shown(text)}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ClusterError(f"bad {what} {shown(text)}: expected [host]:port")
            port = _port(rest[1:], text, what)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text, what)
    if not host:
        raise ClusterError(f"bad {what} {shown(text)}: no host")
    return host, port


def _port(text: str, whole: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ClusterError(f"bad {what} {shown(whole)}: port {shown(text)} is not a number") from None
    if not 0 <= port <= 65535:
        raise ClusterError(f"bad {what} {shown(whole)}: port {shown(port)} is out of range 0..65535")
    return port


#: The shortest interval or timeout a ClusterConfig accepts, in seconds.
MIN_SECONDS = 0.01

#: Field metadata: the help of a field that ``gorilix node`` offers as an option (``push_interval``:
#: ``--push-interval`` and ``GORILIX_PUSH_INTERVAL``); the CLI builds those options from the fields.
OPTION_HELP = "gorilix.option_help"


def _option(default: Any, help: str) -> Any:
    """A field with this default that ``gorilix node`` offers as an option, with this help."""
    return field(default=default, metadata={OPTION_HELP: help})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    """``0.0.0.0`` or ``::`` ("every interface", also written ``""`` or ``*``): bindable, never reachable."""
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def resolve(host: str) -> str:
    """An IPv4 address for ``host`` (gossip and routing use addresses, not names)."""
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0])
    except OSError as exc:
        raise ClusterError(f"cannot resolve {shown(host)}: {exc}") from None


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        return math.inf if value > 0 else -math.inf


@dataclass(frozen=True)
class ClusterConfig:
    """How this node joins a cluster.

    ``probe_timeout`` defaults to half of ``probe_interval`` (so
    ``probe_interval=0.4`` alone is fine); given, it must be shorter.
    The fields ``gorilix node`` offers as options (``--push-interval``,
    ``GORILIX_PUSH_INTERVAL``, ...) carry their help in :data:`OPTION_HELP`.

    ``bind_port`` is the router's TCP port; SWIM gossips over UDP on
    ``gossip_port``, which defaults to the same number. Seeds name gossip
    addresses. ``push_interval`` is how often gossip goes to ``gossip_nodes``
    random members; ``pull_interval`` how often a full state exchange runs.

    Without ``secret_key`` a node uses the per-user secret of this machine
    (see :meth:`with_secret`); ``insecure=True`` runs it with no secret at
    all (which is also what lets a node without a secret bind beyond loopback).
    """

    node_name: str
    bind_addr: str = "127.0.0.1"
    bind_port: int = 7946
    seeds: list[str] = field(default_factory=list)
    gossip_nodes: int = _option(3, "Gossip: how many random members each gossip round sends to.")
    gossip_port: int | None = None
    push_interval: float = _option(0.2, "Gossip: seconds between gossip rounds.")
    pull_interval: float = _option(30.0, "Gossip: seconds between full state exchanges with one random member "
                                         "(longer past 32 members).")
    advertise_addr: str | None = None
    probe_interval: float = _option(1.0, "Gossip: seconds between failure-detection probes.")
    #: None: half of ``probe_interval`` (filled in when the config is built).
    probe_timeout: float | None = _option(None, "Gossip: seconds a probe waits for its ack before asking helpers; "
                                                "shorter than the probe interval.")
    indirect_checks: int = _option(3, "Gossip: how many members are asked to probe one that did not answer.")
    suspicion_mult: int = _option(4, "Gossip: suspicion timeout multiplier (of the probe interval, times "
                                     "log10 of the members).")
    retransmit_mult: int = _option(4, "Gossip: each update is sent this many times log10 of the members.")
    secret_key: bytes | None = None
    insecure: bool = False
    #: A file holding the secret, read now (into ``secret_key``) as ``gorilix node --secret-file`` reads it.
    secret_file: str | os.PathLike[str] | None = None
    join_timeout: float = _option(5.0, "Seconds to wait for a seed to answer.")
    leave_timeout: float = _option(3.0, "Seconds each step of a graceful leave may take.")
    #: Every this many seconds, one state exchange with a member declared dead (or a seed not
    #: seen): what merges the two halves of a network partition once it heals.
    reconnect_interval: float = _option(10.0, "Seconds between state exchanges with members declared dead "
                                              "(what merges a healed partition).")

    def __post_init__(self) -> None:
        if not isinstance(self.node_name, str) or not 0 < len(self.node_name) <= NAME_MAX:
            # Gossip refuses longer names, so such a node could never join.
            raise ClusterError(
                f"ClusterConfig.node_name must be a non-empty str of at most {NAME_MAX} characters, "
                f"got {shown(self.node_name)}"
            )
        for name in ("bind_port", "gossip_port"):
            value = getattr(self, name)
            if name == "gossip_port" and value is None:
                continue  # the same number as bind_port
            if type(value) is not int or not 0 <= value <= 65535:
                raise ClusterError(f"ClusterConfig.{name}={shown(value)}: need a port number in 0..65535 (an int)")
        for name in ("gossip_nodes", "indirect_checks", "suspicion_mult", "retransmit_mult"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ClusterError(f"ClusterConfig.{name}={shown(value)}: need a positive int")
        for name in ("push_interval", "pull_interval", "probe_interval", "probe_timeout",
                     "join_timeout", "leave_timeout", "reconnect_interval"):
            value = getattr(self, name)
            if name == "probe_timeout" and value is None:
                continue  # half of probe_interval, below
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not MIN_SECONDS <= _float(value) < math.inf:  # (nan is refused too)
                # A gossip thread told to run every 1e-300 s would spin and starve its node.
                raise ClusterError(
                    f"ClusterConfig.{name}={shown(value)}: need a finite number of seconds > 0, "
                    f"at least {MIN_SECONDS:g}"
                )
        if self.probe_timeout is None:
            object.__setattr__(self, "probe_timeout", self.probe_interval / 2)
        elif self.probe_timeout >= self.probe_interval:
            raise ClusterError(
                f"probe_timeout ({self.probe_timeout:g} s) must be shorter than probe_interval "
                f"({self.probe_interval:g} s)"
            )
        if self.advertise_addr is not None:
            if not isinstance(self.advertise_addr, str):
                raise ClusterError(f"ClusterConfig.advertise_addr={shown(self.advertise_addr)}: need a str "
                                   "('host' or 'host:port')")
            if self.advertise_addr:
                host, _ = parse_hostport(self.advertise_addr, self.bind_port, "ClusterConfig.advertise_addr")
                if is_unspecified(host):
                    raise ClusterError(
                        f"ClusterConfig.advertise_addr={shown(self.advertise_addr)}: {host} means every interface, "
                        "an address no other node can reach; advertise an address of this machine that the "
                        "others reach, e.g. advertise_addr=\"10.0.0.5\""
                    )
        if self.secret_file is not None:
            if not isinstance(self.secret_file, str | os.PathLike):
                raise ClusterError(f"ClusterConfig.secret_file={shown(self.secret_file)}: need a path")
            secret = read_secret_file(self.secret_file)
            if self.secret_key is not None and self.secret_key != secret:  # (dataclasses.replace passes both)
                raise ClusterError("ClusterConfig takes secret_key= or secret_file=, not both")
            object.__setattr__(self, "secret_key", secret)
            object.__setattr__(self, "secret_file", os.fspath(self.secret_file))
        if self.secret_key is not None and (not isinstance(self.secret_key, bytes)
                                            or len(self.secret_key) < MIN_SECRET_BYTES):
            raise ClusterError("secret_key must be bytes, at least 16 of them (32 random bytes is good)")
        if self.secret_key is None and not self.insecure and not is_loopback(self.bind_addr):
            raise ClusterError(
                f"refusing to bind {self.bind_addr} without a secret_key: anyone on the network could "
                "join and run code here; set secret_key (or insecure=True on a trusted network)"
            )

    @property
    def probe_wait(self) -> float:
        """``probe_timeout`` in seconds: as given, else half of ``probe_interval``."""
        return self.probe_interval / 2 if self.probe_timeout is None else self.probe_timeout

    @property
    def uses_default_secret(self) -> bool:
        """Whether this node runs with the per-user secret: no secret given, and not ``insecure``."""
        return self.secret_key is None and not self.insecure

    def with_secret(self) -> ClusterConfig:
        """The config a node runs with: the per-user secret filled in when no secret was given.

        A node is never open to every process of the machine by default: without
        ``secret_key`` (and without ``insecure=True``) it uses the per-user secret
        (:mod:`gorilix.cluster.keyfile`), made on first use, so the user's own
        nodes and tools get in and no one else does. ``insecure=True`` without a
        secret runs with none at all.
        """
        if not self.uses_default_secret:
            return self
        return replace(self, secret_key=default_secret(create=True))

    def to_wire(self) -> dict[str, Any]:
        """Every field as plain data, for the node process that runs the gossip (the secret read, not its path)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "secret_file"}

    @classmethod
    def from_wire(cls, data: object) -> ClusterConfig:
        """The config a client sent; checked like one built in Python (ClusterError otherwise)."""
        names = {f.name for f in fields(cls)} - {"secret_file"}  # (the node is sent the secret, never a path)
        if type(data) is not dict or not all(type(key) is str and key in names for key in data):
            raise ClusterError(f"a cluster config must be a dict of ClusterConfig fields, got {shown(data)}")
        for key in ("bind_addr", "advertise_addr"):
            if key in data and not (type(data[key]) is str or (key == "advertise_addr" and data[key] is None)):
                raise ClusterError(f"ClusterConfig.{key}={shown(data[key])}: need a str")
        seeds = data.get("seeds", [])
        if type(seeds) is not list or not all(type(seed) is str for seed in seeds):
            raise ClusterError(f"ClusterConfig.seeds={shown(seeds)}: need a list of 'host:port' strs")
        if type(data.get("insecure", False)) is not bool:
            raise ClusterError(f"ClusterConfig.insecure={shown(data['insecure'])}: need a bool")
        return cls(**data)

    def advertised(self, bound_port: int) -> tuple[str, int]:
        """The host and router port other nodes should use to reach us."""
        if self.advertise_addr:
            host, port = parse_hostport(self.advertise_addr, bound_port, "advertise_addr")
            return resolve(host), port
        host = self.bind_addr
        if is_unspecified(host):
            raise ClusterError(
                f"bind_addr {host} needs advertise_addr: the address other nodes can reach this one at"
            )
        return resolve(host), bound_port

    def seed_addresses(self, seeds: list[str] | None = None) -> list[tuple[str, int]]:
        out = []
        for seed in self.seeds if seeds is None else seeds:
            host, port = parse_hostport(seed, 7946, "seed")
            out.append((resolve(host), port))
        return out

"""Bad input from a caller is a clear GorilixError at the caller, before anything is sent.

Each test names the mistake, checks the exact error class and a fragment of
its message, and, where a message could have gone out, that nothing was
delivered (a Counter counts every message but "get").
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq
from actors import Counter, Echo, KeyValue, Misuser, Recorder, Stateful
from conftest import assert_no_children, wait_for

from gorilix import (
    ActorRef,
    ActorSystem,
    ClusterError,
    DecodeError,
    GorilixError,
    InvalidArgument,
    PoolRef,
    SpawnError,
    supervisor,
)
from gorilix.system import ClusterConfig
from gorilix.transport import codec
from gorilix.transport.frames import TELL, pack_env, pack_route
from gorilix.workers.ref import EXT_ACTOR_REF

BAD_TIMEOUTS: list[Any] = [
    math.nan, -1, 0, 0.0, -0.5, -math.inf, "5", b"5", [1], True, False, 2**70, 1e300,
]
NO_LIMIT = "None to wait without a limit"


# -- timeouts ------------------------------------------------------------------


def test_a_bad_timeout_is_refused_before_anything_is_sent(system: ActorSystem) -> None:
    counter = system.spawn(Counter)
    pool = system.spawn_pool(Counter, size=2)
    for timeout in BAD_TIMEOUTS:
        for label, call in [
            ("ask", lambda t=timeout: counter.ask("x", timeout=t)),
            ("call", lambda t=timeout: counter.call("x", timeout=t)),
            ("pool.ask", lambda t=timeout: pool.ask("x", timeout=t)),
            ("pool.map", lambda t=timeout: pool.map(["x", "y"], timeout=t)),
        ]:
            with pytest.raises(InvalidArgument, match=f"timeout=.*{NO_LIMIT}") as info:
                call()
            assert repr(timeout)[:5] in str(info.value), (label, info.value)

    async def from_asyncio() -> None:
        for timeout in BAD_TIMEOUTS:
            with pytest.raises(InvalidArgument, match=NO_LIMIT):
                await counter.ask_async("x", timeout=timeout)
            with pytest.raises(InvalidArgument, match=NO_LIMIT):
                await counter.call_async("x", timeout=timeout)

    asyncio.run(from_asyncio())
    assert counter.ask("get") == 0
    assert [ref.ask("get") for ref in pool] == [0, 0]


def test_a_bad_timeout_inside_an_actor_is_refused_before_sending(system: ActorSystem) -> None:
    misuser = system.spawn(Misuser, worker=0)
    counter = system.spawn(Counter, worker=1)
    for timeout in [math.nan, -1, 0, "5", True, 1e300]:
        answer = misuser.ask(("ask_async", counter, "x", timeout))
        assert answer.startswith("InvalidArgument: timeout="), answer
        assert NO_LIMIT in answer
    assert counter.ask("get") == 0


@pytest.mark.parametrize("timeout", [None, math.inf])
def test_timeout_none_or_inf_waits_without_a_limit(system: ActorSystem, timeout: float | None) -> None:
    echo = system.spawn(Echo)
    kv = system.spawn(KeyValue)
    pool = system.spawn_pool(Echo, size=2)
    assert echo.ask("hi", timeout=timeout) == "hi"
    assert kv.call("missing", timeout=timeout) is None
    assert pool.ask(1, timeout=timeout) == 1
    assert pool.map([1, 2, 3], timeout=timeout) == [1, 2, 3]

    async def from_asyncio() -> list[Any]:
        return [await echo.ask_async("a", timeout=timeout), await kv.call_async("k", timeout=timeout)]

    assert asyncio.run(from_asyncio()) == ["a", None]
    misuser = system.spawn(Misuser, worker=0)
    far = system.spawn(Echo, worker=1)
    assert misuser.ask(("ask_async", far, "inside", timeout)) == ("ok", "inside")


def test_a_whole_number_timeout_is_fine(system: ActorSystem) -> None:
    echo = system.spawn(Echo)
    assert echo.ask("int", timeout=5) == "int"
    assert echo.ask("tiny", timeout=1e6) == "tiny"


def test_system_timeouts_are_checked(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="timeout=nan"):
        system.reload("actors", timeout=math.nan)
    with pytest.raises(InvalidArgument, match="timeout='soon'"):
        system.stop(timeout="soon")  # type: ignore[arg-type]
    assert system.running
    assert system.spawn(Echo).ask("still here") == "still here"


def test_none_is_no_limit_for_start_and_stop(make_system: Any) -> None:
    system = make_system(1, start_timeout=None)
    assert system.spawn(Echo).ask("up", timeout=None) == "up"
    system.stop(timeout=None)
    assert not system.running


@pytest.mark.parametrize("start_timeout", [math.nan, -1, 0, "60"])
def test_a_bad_start_timeout_starts_nothing(start_timeout: Any) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidArgument, match="start_timeout="):
        ActorSystem(name, workers=1, start_timeout=start_timeout)
    assert_no_children()


# -- refs ----------------------------------------------------------------------


@pytest.mark.parametrize("node", [None, 5, b"node", "n" * 256])
def test_a_ref_with_a_bad_node_fails_where_it_is_made(node: Any) -> None:
    with pytest.raises(InvalidArgument, match="ActorRef node"):
        ActorRef(node, 1)


@pytest.mark.parametrize("actor_id", [None, -1, 2**64, 2**70, True, "1", 1.0])
def test_a_ref_with_a_bad_id_fails_where_it_is_made(actor_id: Any) -> None:
    with pytest.raises(InvalidArgument, match="ActorRef id"):
        ActorRef("node", actor_id)


@pytest.mark.parametrize("name", [5, b"name", ["x"]])
def test_a_ref_with_a_bad_name_fails_where_it_is_made(name: Any) -> None:
    with pytest.raises(InvalidArgument, match="ActorRef name"):
        ActorRef("node", 1, name)


def test_a_ref_of_nothing_is_refused_at_once() -> None:
    # It used to be accepted, and each tell through it silently dropped.
    with pytest.raises(InvalidArgument, match="ActorRef node must be a str"):
        ActorRef(None, None)  # type: ignore[arg-type]


def test_refs_at_the_limits_travel() -> None:
    for ref in [ActorRef("n" * 255, 2**64 - 1, "x" * 1000), ActorRef("", 0)]:
        assert codec.decode(codec.encode(ref)) == ref


@pytest.mark.parametrize(
    "fields",
    [["n" * 256, 1, None], ["node", -1, None], ["node", True, None], [None, None, None]],
    ids=["long-node", "negative-id", "bool-id", "nothing"],
)
def test_a_bad_ref_from_the_wire_is_a_decode_error(fields: list[Any]) -> None:
    # Receivers drop and count a DecodeError; nothing reaches the user.
    inner = msgpack.packb(fields, use_bin_type=True)
    data = msgpack.packb(msgpack.ExtType(EXT_ACTOR_REF, inner), use_bin_type=True)
    with pytest.raises(DecodeError, match="ActorRef"):
        codec.decode(data)


# -- names ---------------------------------------------------------------------

BAD_NAMES: list[Any] = ["", "n" * 256, 5, None, b"name", ["x"]]


def test_register_name_needs_a_ref(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="register_name needs an ActorRef, got 'a str'"):
        system.register_name("x", "a str")  # type: ignore[arg-type]


def test_bad_names_are_refused_by_every_name_method(system: ActorSystem) -> None:
    ref = system.spawn(Echo)
    for name in BAD_NAMES:
        with pytest.raises(InvalidArgument, match="at most 255 characters"):
            system.register_name(name, ref)
        with pytest.raises(InvalidArgument, match="at most 255 characters"):
            system.unregister_name(name)
        with pytest.raises(InvalidArgument, match="at most 255 characters"):
            system.whereis(name)
        if name is not None:  # spawn's name=None means "no name"
            with pytest.raises(SpawnError, match="at most 255 characters"):
                system.spawn(Echo, name=name)
    longest = "n" * 255
    system.register_name(longest, ref)
    assert system.whereis(longest) == ref
    assert system.unregister_name(longest) is True


def test_the_node_refuses_a_bad_name_from_a_remote_tool(system: ActorSystem) -> None:
    # A tool that talks to the node directly skips the facade's checks: the node
    # checks too, and the error keeps its class across the wire.
    ref = system.spawn(Echo)
    with pytest.raises(InvalidArgument, match="at most 255 characters"):
        system._control("register_name", "n" * 256, ref.id)
    assert system.whereis("n" * 255) is None


def test_whereis_and_spawn_check_node(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="node=5"):
        system.whereis("x", node=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="node=5"):
        system.spawn(Echo, node=5)  # type: ignore[arg-type]


# -- spawn, pools, workers -------------------------------------------------------


@pytest.mark.parametrize("worker", ["a", 2**70, True, -1, 1.0])
def test_spawn_on_a_bad_worker(system: ActorSystem, worker: Any) -> None:
    with pytest.raises(SpawnError, match=r"worker=.* must be a worker number \(an int >= 0\) or None"):
        system.spawn(Echo, worker=worker)
    with pytest.raises(SpawnError, match=r"no worker 2 on node .*; it has workers 0\.\.1"):
        system.spawn(Echo, worker=2)


def test_spawn_pool_refuses_options_it_sets_itself(system: ActorSystem) -> None:
    with pytest.raises(SpawnError, match="spawn_pool places its actors itself"):
        system.spawn_pool(Echo, size=2, worker=1)
    with pytest.raises(SpawnError, match="spawn_pool cannot give every actor one name"):
        system.spawn_pool(Echo, size=2, name="pooled")
    assert system.whereis("pooled") is None


def test_pool_ref_needs_refs_and_map_needs_items(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="PoolRef needs at least one ActorRef"):
        PoolRef([])
    with pytest.raises(InvalidArgument, match="PoolRef needs ActorRefs, got 'x'"):
        PoolRef(["x"])  # type: ignore[list-item]
    pool = system.spawn_pool(Echo, size=1)
    with pytest.raises(InvalidArgument, match="map needs an iterable of items, got 5"):
        pool.map(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("worker_id", ["a", 2**70, True, -1, 2, None])
def test_kill_worker_with_a_bad_worker(system: ActorSystem, worker_id: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"worker_id=.* must be a worker number 0\.\.1"):
        system.kill_worker(worker_id)
    assert all(w.alive for w in system.workers())


@pytest.mark.parametrize("sig", [999, -9, "KILL", None, 1.5, True, 0])
def test_kill_worker_with_a_bad_signal_keeps_the_node(system: ActorSystem, sig: Any) -> None:
    # sig=999 used to reach os.kill in the node and end the node's thread.
    with pytest.raises(InvalidArgument, match=f"sig={sig!r} is not a signal"):
        system.kill_worker(0, sig)
    assert all(w.alive for w in system.workers())
    assert system.spawn(Echo).ask("alive") == "alive"


def test_kill_worker_accepts_a_signal_enum(system: ActorSystem) -> None:
    pid = system.kill_worker(1, signal.SIGKILL)
    assert isinstance(pid, int)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"workers": -1}, "workers=-1"),
        ({"workers": 0}, "workers=0"),
        ({"workers": True}, "workers=True"),
        ({"workers": "2"}, "workers='2'"),
        ({"name": 5}, "ActorSystem name"),
        ({"name": ""}, "ActorSystem name"),
        ({"name": "n" * 256}, "ActorSystem name"),
        ({"max_parked": 0}, "max_parked=0"),
        ({"max_parked": "many"}, "max_parked='many'"),
    ],
)
def test_actor_system_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    args = {"name": f"test-{uuid.uuid4().hex[:8]}", "workers": 1, **kwargs}
    with pytest.raises(InvalidArgument, match=fragment):
        ActorSystem(**args)
    assert_no_children()


def test_reload_needs_a_module_name(system: ActorSystem) -> None:
    for module in [5, "", None]:
        with pytest.raises(InvalidArgument, match="reload needs a module name"):
            system.reload(module)  # type: ignore[arg-type]


def test_subscribe_needs_a_ref(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="expected an ActorRef, got 'x'"):
        system.subscribe("topic", "x")  # type: ignore[arg-type]


def test_cluster_calls_check_their_arguments(system: ActorSystem) -> None:
    system.set_cluster_provider(object())
    with pytest.raises(InvalidArgument, match="ClusterConfig"):
        system.enable_clustering({"node_name": "x"})  # type: ignore[arg-type]
    for seeds in ["host:7946", 5, [5]]:
        with pytest.raises(InvalidArgument, match="seeds"):
            system.join_cluster(seeds)  # type: ignore[arg-type]


# -- supervisors -------------------------------------------------------------------


def test_supervisor_arguments(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match="strategy=5 must be a supervisor.Strategy"):
        system.spawn_supervisor("s", 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="a supervisor needs a non-empty str name"):
        system.spawn_supervisor(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="restart=5"):
        system.spawn_supervisor("s", restart=5)  # type: ignore[arg-type]
    sup = system.spawn_supervisor("s")
    with pytest.raises(InvalidArgument, match="add_child needs a supervisor.ChildSpec, got 'x'"):
        sup.add_child("x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="strategy=5 must be a supervisor.Strategy"):
        sup.add_supervisor("nested", 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="child id"):
        sup.remove_child(5)  # type: ignore[arg-type]
    with pytest.raises(SpawnError, match="worker='a'"):
        sup.add_child(supervisor.ChildSpec(id="w", actor_class=Stateful, worker="a"))  # type: ignore[arg-type]
    assert sup.children() == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"id": 5}, "ChildSpec id"),
        ({"id": ""}, "ChildSpec id"),
        ({"args": 5}, "ChildSpec args"),
        ({"kwargs": 5}, "ChildSpec kwargs"),
        ({"kwargs": {1: 2}}, "ChildSpec kwargs"),
    ],
)
def test_child_spec_fails_where_it_is_made(fields: dict[str, Any], fragment: str) -> None:
    spec: dict[str, Any] = {"id": "c", "actor_class": Stateful, **fields}
    with pytest.raises(InvalidArgument, match=fragment):
        supervisor.ChildSpec(**spec)


# -- inside an actor -------------------------------------------------------------------


def test_actor_methods_check_their_arguments(system: ActorSystem) -> None:
    misuser = system.spawn(Misuser)
    for op in ["monitor", "demonitor", "link", "unlink"]:
        for bad in ["x", 5, None]:
            answer = misuser.ask((op, bad))
            assert answer == f"InvalidArgument: {op} needs an ActorRef, got {bad!r}", answer
    for delay in [math.nan, -1, math.inf, "1", True, None]:
        answer = misuser.ask(("send_after", delay))
        assert answer.startswith(f"InvalidArgument: send_after: delay={delay!r}"), answer
    for worker in ["a", -1, True]:
        answer = misuser.ask(("spawn", worker))
        assert answer.startswith(f"SpawnError: worker={worker!r}"), answer
    assert misuser.ask(("send_after", 0)) == ("ok", None)


def test_every_bad_argument_error_is_a_gorilix_error() -> None:
    assert issubclass(InvalidArgument, GorilixError)
    assert issubclass(InvalidArgument, ValueError)


# -- supervision configuration ---------------------------------------------------

SUPERVISION_CONFIG_MISTAKES: list[tuple[str, Callable[[], Any], str]] = [
    ("kind", lambda: supervisor.Strategy("one_for_some"),
     r"Strategy\.kind must be one of 'one_for_one', 'one_for_all', 'rest_for_one', got 'one_for_some'"),
    ("kind-int", lambda: supervisor.Strategy(5), r"Strategy\.kind must be one of .*, got 5"),  # type: ignore[arg-type]
    ("max-restarts-negative", lambda: supervisor.Strategy(max_restarts=-1),
     r"Strategy\.max_restarts must be an int from 0 to 2\*\*64-1, or None for no limit, got -1"),
    ("max-restarts-bool", lambda: supervisor.Strategy(max_restarts=True), r"Strategy\.max_restarts .* got True"),
    ("max-restarts-huge", lambda: supervisor.Strategy(max_restarts=2**64), r"Strategy\.max_restarts .* got 1844"),
    ("within-str", lambda: supervisor.Strategy(within_seconds="5"),  # type: ignore[arg-type]
     r"Strategy\.within_seconds must be a finite number of seconds > 0, got '5'"),
    ("within-none", lambda: supervisor.Strategy(within_seconds=None),  # type: ignore[arg-type]
     r"Strategy\.within_seconds .* got None"),
    ("within-nan", lambda: supervisor.Strategy(within_seconds=math.nan), r"Strategy\.within_seconds .* got nan"),
    ("within-inf", lambda: supervisor.Strategy(within_seconds=math.inf), r"Strategy\.within_seconds .* got inf"),
    ("within-bool", lambda: supervisor.Strategy(within_seconds=True), r"Strategy\.within_seconds .* got True"),
    ("within-huge", lambda: supervisor.Strategy(within_seconds=10**400), r"Strategy\.within_seconds .* got 1000"),
    ("within-unprintable", lambda: supervisor.Strategy(within_seconds=10**5000),  # repr would raise ValueError
     r"Strategy\.within_seconds .* got an int of 16610 bits"),
    ("backoff", lambda: supervisor.Strategy(backoff=None),  # type: ignore[arg-type]
     r"Strategy\.backoff must be a supervisor\.Backoff \(Backoff\.none\(\) for no delay\), got None"),
    ("breaker", lambda: supervisor.Strategy(circuit_breaker={"trip_threshold": 2}),  # type: ignore[arg-type]
     r"Strategy\.circuit_breaker must be a supervisor\.BreakerConfig, or None for no breaker, got \{"),
    ("backoff-kind", lambda: supervisor.Backoff("fibonacci"),
     r"Backoff\.kind must be one of 'none', 'linear', 'exponential', 'jittered', got 'fibonacci'"),
    ("backoff-base-huge", lambda: supervisor.Backoff(base=10**400),
     r"Backoff\.base must be a finite number >= 0, got 1000"),
    ("backoff-base-negative", lambda: supervisor.Backoff.exponential(base=-1.0),
     r"Backoff\.base must be a finite number >= 0, got -1\.0"),
    ("backoff-max-inf", lambda: supervisor.Backoff(max=math.inf), r"Backoff\.max must be a finite number >= 0, got inf"),
    ("backoff-jitter", lambda: supervisor.Backoff.jittered(jitter=2.0),
     r"Backoff\.jitter must be a number in \[0, 1\], got 2\.0"),
    ("backoff-free", lambda: supervisor.Backoff.none(free=-2), r"Backoff\.free must be an int from 0 to 2\*\*64-1, got -2"),
    ("backoff-free-huge", lambda: supervisor.Backoff(free=2**64), r"Backoff\.free must be an int .* got 1844"),
    ("attempt", lambda: supervisor.Backoff.linear().delay(0), r"Backoff\.delay: attempt must be an int >= 1, got 0"),
    ("attempt-str", lambda: supervisor.Backoff.linear().delay("1"),  # type: ignore[arg-type]
     r"Backoff\.delay: attempt must be an int >= 1, got '1'"),
    ("rng", lambda: supervisor.Backoff.jittered().delay(3, rng=5),  # type: ignore[arg-type]
     r"Backoff\.delay: rng must be a random\.Random \(or None\), got 5"),
    ("breaker-threshold", lambda: supervisor.BreakerConfig(trip_threshold=0),
     r"BreakerConfig\.trip_threshold must be an int from 1 to 2\*\*64-1, got 0"),
    ("breaker-threshold-huge", lambda: supervisor.BreakerConfig(success_threshold=2**64),
     r"BreakerConfig\.success_threshold must be an int from 1 .* got 1844"),
    ("breaker-window-huge", lambda: supervisor.BreakerConfig(failure_window=10**400),
     r"BreakerConfig\.failure_window must be a finite number of seconds > 0, got 1000"),
    ("breaker-reset-str", lambda: supervisor.BreakerConfig(reset_timeout="1"),  # type: ignore[arg-type]
     r"BreakerConfig\.reset_timeout must be a finite number of seconds > 0, got '1'"),
    ("circuit-config", lambda: supervisor.CircuitBreaker({"trip_threshold": 2}),  # type: ignore[arg-type]
     r"CircuitBreaker config must be a supervisor\.BreakerConfig, got \{'trip_threshold': 2\}"),
    ("circuit-clock", lambda: supervisor.CircuitBreaker(clock=5),  # type: ignore[arg-type]
     r"CircuitBreaker clock must be a function returning seconds \(such as time\.monotonic\), got 5"),
    ("from-wire", lambda: supervisor.Strategy.from_wire([1, 2]), r"malformed supervision strategy \[1, 2\]"),
]


@pytest.mark.parametrize(
    ("make", "fragment"), [case[1:] for case in SUPERVISION_CONFIG_MISTAKES],
    ids=[case[0] for case in SUPERVISION_CONFIG_MISTAKES],
)
def test_a_bad_supervision_setting_is_an_invalid_argument(make: Callable[[], Any], fragment: str) -> None:
    # These were raw ValueError, TypeError or OverflowError, or accepted (to
    # fail later, at to_wire or at a restart).
    with pytest.raises(InvalidArgument, match=fragment) as info:
        make()
    assert type(info.value) is InvalidArgument


def test_huge_supervision_numbers_are_cut_short_in_messages() -> None:
    with pytest.raises(InvalidArgument) as info:
        supervisor.Backoff(base=10**400)
    assert len(str(info.value)) < 200
    assert str(info.value).endswith("got " + "1" + "0" * 76 + "...")


def test_a_bad_strategy_reaches_no_node(system: ActorSystem) -> None:
    with pytest.raises(InvalidArgument, match=r"Strategy\.within_seconds"):
        system.spawn_supervisor("s", supervisor.Strategy(within_seconds="5"))  # type: ignore[arg-type]
    assert system.spawn_supervisor("s").children() == []


def test_supervision_settings_at_the_limits_travel(system: ActorSystem) -> None:
    strategy = supervisor.Strategy(
        max_restarts=2**64 - 1, within_seconds=1e300,
        backoff=supervisor.Backoff(base=2**900, max=3, free=2**64 - 1),  # an int: it travels as a float
        circuit_breaker=supervisor.BreakerConfig(2**64 - 1, 2**900, 1, 2**64 - 1),
    )
    assert supervisor.Strategy.from_wire(codec.decode(codec.encode(strategy.to_wire()))) == strategy
    sup = system.spawn_supervisor("limits", strategy)
    assert sup.children() == []


# -- frames from peers -------------------------------------------------------------


def test_a_peer_frame_with_a_negative_id_or_long_name_is_dropped_and_counted(system: ActorSystem) -> None:
    # A negative sender id used to reach the actor, whose self.sender then
    # raised; a negative destination went to dead letters as "-0x1".
    recorder = system.spawn(Recorder)
    before = system.stats()
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(system._node.endpoint)
    good_env = pack_env(TELL, "peer", 7)
    bad = codec.encode("bad")
    try:
        for route, env in [
            (msgpack.packb([system.name, -1, 0, 0, 0]), good_env),  # the node refuses these
            (msgpack.packb([system.name, recorder.id, 0, -1, 0]), good_env),
            (msgpack.packb(["n" * 256, recorder.id, 0, 0, 0]), good_env),
            (pack_route(system.name, recorder.id), msgpack.packb([TELL, "peer", -5, 0])),  # the worker refuses these
            (pack_route(system.name, recorder.id), msgpack.packb([TELL, "peer", 5, -1])),
            (pack_route(system.name, recorder.id), msgpack.packb([TELL, "n" * 256, 5, 0])),
        ]:
            sock.send_multipart([route, env, bad])
        sock.send_multipart([pack_route(system.name, recorder.id), good_env, codec.encode("good")])
        wait_for(lambda: recorder.ask(("get",)), what="a message delivered")
    finally:
        sock.close()
    assert recorder.ask(("get",)) == ["good"]
    after = system.stats()
    assert after["malformed"] == before["malformed"] + 3
    assert after["dead_letters"] == before["dead_letters"]
    assert system.spawn(Echo).ask("alive") == "alive"


# -- cluster configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("node_name", "fragment"),
    [
        ("", "got ''"),
        (5, "got 5"),
        (b"node", "got b'node'"),
        (None, "got None"),
        ("n" * 256, "got 'nnnn"),
        ("\u00e9" * 256, "got '\u00e9\u00e9"),
    ],
    ids=["empty", "int", "bytes", "none", "too-long", "too-long-two-byte"],
)
def test_cluster_config_refuses_a_bad_node_name(node_name: Any, fragment: str) -> None:
    # A name over 255 characters was accepted, and then every gossip message
    # naming it was refused by the peers.
    with pytest.raises(ClusterError, match="ClusterConfig.node_name must be a non-empty str of at most 255 characters") as info:
        ClusterConfig(node_name=node_name)
    assert fragment in str(info.value)
    assert len(str(info.value)) < 300


def test_cluster_config_accepts_the_longest_node_name() -> None:
    assert ClusterConfig(node_name="\u00e9" * 255).node_name == "\u00e9" * 255


@pytest.mark.parametrize("value", [math.nan, math.inf, True, 10**400, "1", 1e-300, 0.001],
                         ids=["nan", "inf", "bool", "huge", "str", "tiny", "under the floor"])
@pytest.mark.parametrize("field", ["push_interval", "probe_interval", "join_timeout", "reconnect_interval"])
def test_cluster_config_refuses_a_bad_interval(field: str, value: Any) -> None:
    with pytest.raises(ClusterError, match=f"ClusterConfig.{field}=.* need a finite number of seconds > 0"):
        ClusterConfig(node_name="n", **{field: value})


# -- topics ----------------------------------------------------------------------------

BAD_TOPICS: list[Any] = [5, "", None, b"topic", ("a",)]


def test_topics_must_be_non_empty_strs(system: ActorSystem) -> None:
    # subscribe(5, ref) used to subscribe to topic "5".
    counter = system.spawn(Counter)
    for topic in BAD_TOPICS:
        for op, call in [
            ("subscribe", lambda t=topic: system.subscribe(t, counter)),
            ("unsubscribe", lambda t=topic: system.unsubscribe(t, counter)),
            ("publish", lambda t=topic: system.publish(t, "hello")),
        ]:
            with pytest.raises(InvalidArgument, match=re.escape(f"{op}: topic={topic!r} must be a non-empty str")) as info:
                call()
            assert type(info.value) is InvalidArgument
    for topic in ["5", "None", "b'topic'"]:
        assert system.publish(topic, "anyone?") == 0
    assert counter.ask("get") == 0


def test_topics_inside_an_actor_must_be_non_empty_strs(system: ActorSystem) -> None:
    misuser = system.spawn(Misuser)
    for topic in BAD_TOPICS:
        for op, args in [("subscribe", (topic,)), ("unsubscribe", (topic,)), ("publish", (topic, "hello"))]:
            answer = misuser.ask((op, *args))
            assert answer == f"InvalidArgument: {op}: topic={topic!r} must be a non-empty str", answer
    assert system.publish("5", "anyone?") == 0
    assert misuser.ask(("subscribe", "fine")) == ("ok", None)
    assert system.publish("fine", "hello") == 1


# -- values too large to print -----------------------------------------------------------

#: An int past Python's int-to-str limit (4300 digits): ``f"{HUGE!r:.80}"`` raises ValueError.
HUGE = 10**5000
HUGE_SHOWN = "an int of 16610 bits"

UNPRINTABLE_MISTAKES: list[tuple[str, Callable[[], Any], type[GorilixError], str]] = [
    ("ask-timeout", lambda: ActorRef("n", 1).ask("x", timeout=HUGE), InvalidArgument,
     f"timeout={HUGE_SHOWN} is longer than the limit"),
    ("ask-timeout-negative", lambda: ActorRef("n", 1).ask("x", timeout=-HUGE), InvalidArgument,
     f"timeout={HUGE_SHOWN} must be more than 0 seconds"),
    ("ref-id", lambda: ActorRef("n", HUGE), InvalidArgument, f"ActorRef id must be an int in 0..2\\*\\*64-1, got {HUGE_SHOWN}"),
    ("ref-node", lambda: ActorRef(HUGE, 1), InvalidArgument, f"ActorRef node must be a str .* got {HUGE_SHOWN}"),
    ("system-workers", lambda: ActorSystem("unprintable", workers=-HUGE), InvalidArgument, f"workers={HUGE_SHOWN}: need a positive int"),
    ("cluster-gossip-nodes", lambda: ClusterConfig(node_name="n", gossip_nodes=-HUGE), ClusterError,
     f"ClusterConfig.gossip_nodes={HUGE_SHOWN}: need a positive int"),
    ("cluster-bind-port", lambda: ClusterConfig(node_name="n", bind_port=HUGE), ClusterError,
     f"ClusterConfig.bind_port={HUGE_SHOWN}: need a port number in 0..65535"),
    ("cluster-node-name", lambda: ClusterConfig(node_name=HUGE), ClusterError,  # type: ignore[arg-type]
     f"ClusterConfig.node_name must be .* got {HUGE_SHOWN}"),
    ("pool-ref", lambda: PoolRef([HUGE]), InvalidArgument,
     f"PoolRef needs ActorRefs, got {HUGE_SHOWN}"),
]


@pytest.mark.parametrize(
    ("make", "error", "fragment"), [case[1:] for case in UNPRINTABLE_MISTAKES], ids=[case[0] for case in UNPRINTABLE_MISTAKES]
)
def test_an_int_too_long_to_print_is_shown_by_its_size(make: Callable[[], Any], error: type[GorilixError], fragment: str) -> None:
    # Each raised a raw ValueError ("Exceeds the limit (4300 digits) for
    # integer string conversion") from formatting its own message.
    with pytest.raises(error, match=fragment) as info:
        make()
    assert type(info.value) is error
    assert len(str(info.value)) < 300


def test_an_int_too_long_to_print_is_refused_by_the_system(system: ActorSystem) -> None:
    counter = system.spawn(Counter)
    for call, error, fragment in [
        (lambda: counter.ask("x", timeout=HUGE), InvalidArgument, f"timeout={HUGE_SHOWN}"),
        (lambda: system.spawn(Counter, worker=HUGE), SpawnError, f"worker={HUGE_SHOWN} must be a worker number"),
        (lambda: system.spawn(Counter, mailbox_size=-HUGE), SpawnError, f"mailbox_size={HUGE_SHOWN} must be a positive int"),
        (lambda: system.spawn(Counter, restart=HUGE), SpawnError, f"restart={HUGE_SHOWN} is not one of"),
        (lambda: system.spawn(Counter, name=HUGE), SpawnError, f"name={HUGE_SHOWN} must be a non-empty str"),
        (lambda: system.spawn_pool(Counter, size=-HUGE), SpawnError, f"size={HUGE_SHOWN}: a pool needs at least one actor"),
        (lambda: system.kill_worker(HUGE), InvalidArgument, f"kill_worker: worker_id={HUGE_SHOWN} must be a worker number"),
        (lambda: system.kill_worker(0, HUGE), InvalidArgument, f"kill_worker: sig={HUGE_SHOWN} is not a signal"),
        (lambda: system.subscribe(HUGE, counter), InvalidArgument, f"subscribe: topic={HUGE_SHOWN} must be a non-empty str"),
        (lambda: system.whereis(HUGE), InvalidArgument, f"whereis: a name must be .* got {HUGE_SHOWN}"),
        (lambda: system.spawn_supervisor("s", restart=HUGE), InvalidArgument, f"restart={HUGE_SHOWN} is not one of"),
    ]:
        with pytest.raises(error, match=fragment):
            call()
    assert counter.ask("get") == 0


def test_a_mailbox_size_too_large_to_send_is_a_spawn_error(system: ActorSystem) -> None:
    # It passed the check and failed to encode, as a SerializationError about "a value of type int".
    with pytest.raises(SpawnError, match=r"mailbox_size=1180591620717411303424 must be a positive int \(at most 2\*\*64-1\)"):
        system.spawn(Counter, mailbox_size=2**70)
    assert system.spawn(Counter, mailbox_size=2**64 - 1).ask("get") == 0

"""The names users import are a contract: changing them is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gorilix
from gorilix import supervisor, system
from gorilix.cluster import bridge


def test_gorilix_exports() -> None:
    assert sorted(gorilix.__all__) == sorted([
        "PERMANENT", "TEMPORARY", "TRANSIENT", "AccessDenied", "Actor", "ActorError", "ActorNotFound", "ActorRef",
        "ActorSystem", "AskTimeout", "ClusterError", "DeadLetters", "DecodeError", "Down", "Exit",
        "GenServer", "GorilixError", "InsecureWarning", "InvalidArgument", "MailboxFull", "NodeDown", "NodeUnreachable", "NotRunning",
        "PoolFuture",
        "PoolRef",
        "SerializationError", "SpawnError", "UnknownMessageType", "WorkerDied", "WorkerInfo", "message",
        "supervisor",
    ])
    for name in gorilix.__all__:
        assert getattr(gorilix, name) is not None


def test_every_error_is_a_gorilix_error() -> None:
    exported = [getattr(gorilix, n) for n in gorilix.__all__]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)
              and not issubclass(e, Warning)]
    assert len(errors) == 16
    assert all(issubclass(e, gorilix.GorilixError) for e in errors)
    assert issubclass(gorilix.InsecureWarning, UserWarning)  # (a warning, shown once, not an error)


def test_supervisor_module_names() -> None:
    assert sorted(supervisor.__all__) == sorted([
        "ONE_FOR_ALL", "ONE_FOR_ONE", "PERMANENT", "REST_FOR_ONE", "TEMPORARY", "TRANSIENT",
        "Backoff", "BreakerConfig", "ChildSpec", "CircuitBreaker", "CircuitState", "Strategy",
        "SupervisorRef",
    ])


def test_design_md_clustering_names() -> None:
    assert system.ActorSystem is gorilix.ActorSystem
    assert system.ClusterConfig.__dataclass_fields__.keys() >= {
        "node_name", "bind_addr", "bind_port", "seeds", "gossip_nodes", "gossip_port", "push_interval",
        "pull_interval", "advertise_addr", "probe_interval", "probe_timeout", "indirect_checks",
        "suspicion_mult", "retransmit_mult", "secret_key", "insecure",
    }
    assert [s.value for s in bridge.MemberStatus] == ["alive", "suspect", "dead", "left"]
    for method in ("set_cluster_provider", "enable_clustering", "get_cluster", "join_cluster", "leave_cluster"):
        assert callable(getattr(gorilix.ActorSystem, method))
    for method in ("members", "local_member", "join", "leave"):
        assert callable(getattr(bridge.Cluster, method))


def test_every_export_is_resolved_lazily_from_its_module() -> None:
    assert set(gorilix.__all__) == set(gorilix._EXPORTS) | gorilix._SUBMODULES
    assert "ActorSystem" in dir(gorilix)


def test_import_gorilix_is_light_and_starts_nothing() -> None:
    # A worker imports gorilix.workers.runtime: that must not pull in the node,
    # the cluster or the CLI, and importing gorilix must start no thread.
    code = (
        "import sys, threading, gorilix.workers.runtime, gorilix\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('gorilix.system', 'gorilix.node',"
        " 'gorilix.cluster', 'gorilix.cli', 'click', 'cryptography')))\n"
        "print(heavy, threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 1", out


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gorilix.Nope  # noqa: B018


def test_the_node_process_loads_neither_asyncio_nor_the_cluster_until_it_clusters() -> None:
    # The node starts its workers and then loads itself while they boot: what it loads competes
    # with them for the cores, and a node that never clusters needs no cryptography.
    loaded = _modules_after("gorilix.node_main, gorilix.node")
    assert loaded & {"asyncio", "zmq.asyncio", "cryptography", "gorilix.cluster.links", "gorilix.cluster.service",
                     "gorilix.system", "click"} == set()


def _modules_after(imports: str) -> set[str]:
    """The modules a fresh interpreter holds after ``import`` of ``imports``."""
    code = f"import sys, {imports}\nprint(' '.join(sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_every_public_class_and_method_says_what_it_does() -> None:
    # The API reference is generated from the docstrings (docs/reference.md); eight ActorSystem
    # methods had none, among them register_name, workers, stats and get_cluster.
    import inspect

    missing = [name for name in gorilix.__all__
               if (inspect.isclass(getattr(gorilix, name)) or inspect.isfunction(getattr(gorilix, name)))
               and not inspect.getdoc(getattr(gorilix, name))]
    for name in gorilix.__all__:
        cls = getattr(gorilix, name)
        if not inspect.isclass(cls):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if callable(function) and not function.__doc__:
                missing.append(f"{name}.{attr}")
    assert missing == []


def test_the_api_reference_covers_every_public_name() -> None:
    from pathlib import Path

    reference = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
    covered = {line.split()[1].rsplit(".", 1)[-1] for line in reference.splitlines() if line.startswith(":::")}
    named = {name for name in gorilix.__all__ if name not in ("PERMANENT", "TEMPORARY", "TRANSIENT", "supervisor")}
    assert named - covered == set()

"""The hot-path socket helpers: whole multiparts in, whole multiparts out, and an honest has_input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from gorilix.transport.sockets import configure_internal, has_input, recv_frames, send_frames


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    sender, receiver = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for sock in (sender, receiver):
            configure_internal(sock)
        receiver.bind("inproc://sockets-test")
        sender.connect("inproc://sockets-test")
        yield sender, receiver
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        ctx.term()


def test_a_multipart_arrives_whole_and_in_order(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    sender, receiver = pair
    assert not has_input(receiver)
    send_frames(sender, [b"route", b"env-1", b"payload-1", b"", b"x" * 100_000])
    send_frames(sender, [b"second"])
    assert receiver.poll(5000)
    assert recv_frames(receiver) == [b"route", b"env-1", b"payload-1", b"", b"x" * 100_000]
    assert has_input(receiver)
    assert recv_frames(receiver) == [b"second"]
    assert not has_input(receiver)


def test_receiving_from_an_empty_socket_raises_again(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    _, receiver = pair
    with pytest.raises(zmq.Again):
        recv_frames(receiver)


def test_what_a_killed_node_left_in_the_runtime_directory_is_removed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A node killed with SIGKILL cannot remove its socket file, nor its workers' boards and tallies
    # (2 MiB each): the next node to start on the machine does, once their pid is gone.
    from gorilix.transport import sockets

    monkeypatch.setattr(sockets, "runtime_dir", lambda: str(tmp_path))
    dead = 2**22 + 12345  # (above any pid_max: no such process)
    left = [f"gorilix-n-{dead}-ab.sock", f"gorilix-n-{dead}-ab.w0.health", f"gorilix-n-{dead}-ab.w0.tally"]
    alive = [f"gorilix-m-{os.getpid()}-cd.w0.tally", "secret", "gorilix-other.txt"]
    for name in left + alive:
        (tmp_path / name).write_bytes(b"")
    assert sockets.remove_stale_ipc_files() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(alive)

"""How the node asks Linux to schedule it: a message's wake-up does not wait out a busy core.

Each hop of a message wakes a thread: the receiver's ZeroMQ I/O thread, then
the thread that reads the socket. On a machine whose cores are all busy (the
user's program in a long C call holds one of two cores, say), the woken
thread often lands on a core that a CPU-bound process holds. Linux's
scheduler (EEVDF) lets a woken thread preempt the running one only if it is
owed CPU time ("eligible") and its deadline comes first; otherwise it waits
for the running one's slice to end, which the kernel checks at its next tick
(every 4 ms with ``HZ=250``). A round trip of four hops can meet that wait
two or three times, and an ask that takes 0.2 ms takes 10 ms. Two requests,
made by the node before it starts any thread or worker, and inherited by
them all, make the wait rare:

- **Short time slices.** Since Linux 6.12 a thread may ask for a shorter
  slice than the default (``sched_setattr`` with ``sched_runtime``; no
  privilege needed). A thread with a shorter slice than the running one
  preempts it when it wakes (the scheduler's ``PREEMPT_SHORT``), at once
  instead of at the next tick. The slice changes when a thread runs, not
  how much: CPU shares still go by nice value. The node asks for the
  shortest slice the kernel grants (0.1 ms); what actors start with
  ``subprocess`` inherits it too. A slice someone set for the program before
  is replaced: the kernel does not tell a chosen slice from its default.
- **A session of its own.** A thread that just ran on the busy core is owed
  nothing: it had more than its share there beside the program, so it is
  not eligible and waits for the tick, short slice or not. Where the kernel
  groups processes by session (its "autogroup": on, and the process in the
  root cgroup of the CPU controller), a session of its own makes the node
  and its workers one entity beside the program's session. Together they
  use less of the busy core than the program does, so that entity is owed
  time when one of them wakes, and it preempts at once. (A session for each
  worker as well was measured too: more slow asks than none.) The new
  session's autogroup takes the nice value of the program's, so it weighs
  what the program's session does. What a user sees besides is in
  docs/architecture.md ("A session of its own"): Ctrl-Z stops the program
  and not the node, signals to the program's process group reach the
  program alone, actors have no terminal, and a program busy on every core
  shares the cores with its pool as one job with another.

``GORILIX_SHORT_SLICE=0`` and ``GORILIX_OWN_SESSION=0`` in the environment of
the program that starts the node leave either as it was. Elsewhere (another
OS, an older kernel, a policy other than the default one) nothing changes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import struct
import sys
import time

log = logging.getLogger("gorilix.node")

#: The slice the node and its workers ask for, in nanoseconds: the least the kernel grants.
SHORT_SLICE_NS = 100_000
#: Set to "0" to leave the kernel's default slice.
ENV_VAR = "GORILIX_SHORT_SLICE"
#: Set to "0" to keep the node and its workers in the program's session.
SESSION_ENV_VAR = "GORILIX_OWN_SESSION"
#: Writes of an autogroup's nice value tried, 0.11 s apart, before a warning.
AUTOGROUP_NICE_TRIES = 20

#: (sched_setattr, sched_getattr) by machine: the generic table's numbers and x86-64's own.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275), "riscv64": (274, 275)}
#: struct sched_attr as of Linux 3.14 (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice, priority,
#: runtime, deadline, period. Later kernels take this size too.
_ATTR = struct.Struct("=IIQiIQQQ")


_ON = ("1", "true", "t", "yes", "y", "on")
_OFF = ("0", "false", "f", "no", "n", "off")


def wanted(env_var: str = ENV_VAR) -> bool:
    """Whether the environment leaves ``env_var``'s request on (the default); a value it cannot read is said, and ignored."""
    value = os.environ.get(env_var, "").strip().lower()
    if value in _OFF:
        return False
    if value and value not in _ON:
        log.warning("%s=%r is not one of 1/0, yes/no, on/off, true/false: it stays on", env_var, os.environ[env_var])
    return True


def start_own_session() -> bool:
    """Make this process (the node, before it starts anything) lead a session of its own.

    Returns False where it cannot (it leads a process group already, or
    there are no sessions). The new session's autogroup gets the nice value
    of the group this process leaves, the program's, so against the program
    and the rest of the machine it weighs what the program's session does:
    a process's own nice value counts only inside its group, and copying the
    program's (``nice -n 10``) made its actors yield about 10:1 to the
    program itself.
    """
    try:
        nice = autogroup_nice("self")
        os.setsid()
    except (OSError, AttributeError):  # (already a group leader; no such calls on this OS)
        return False
    if nice:
        _set_autogroup_nice(nice)
    return True


def _set_autogroup_nice(nice: int) -> None:
    """Write ``nice`` into this process's autogroup; the kernel lets an unprivileged user do so once per 100 ms."""
    for _ in range(AUTOGROUP_NICE_TRIES):
        try:
            with open("/proc/self/autogroup", "w") as group:
                group.write(str(nice))
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:  # (a lower nice than allowed: EPERM; no autogroup: ENOENT)
                log.warning("the autogroup of process %d keeps nice 0, not the program's %d: %s",
                            os.getpid(), nice, exc.strerror)
                return
            time.sleep(0.11)  # (another process set one in the last 100 ms: nodes started together do)
    log.warning("the autogroup of process %d keeps nice 0, not the program's %d: the kernel was busy",
                os.getpid(), nice)


def autogroup(pid: int | str) -> str | None:
    """The autogroup process ``pid`` is scheduled in ("/autogroup-12 nice 0"), or None where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/autogroup") as group:
            return group.read().strip()
    except OSError:
        return None


def autogroup_nice(pid: int | str) -> int:
    """The nice value of process ``pid``'s autogroup (0 where there is none)."""
    words = (autogroup(pid) or "").split()
    try:
        return int(words[-1]) if len(words) == 3 and words[1] == "nice" else 0
    except ValueError:
        return 0


def _syscall(which: int, *args: object) -> int | None:
    """sched_setattr (``which`` 0) or sched_getattr (1) with ``args``: its errno (0: done), or None where there is none."""
    calls = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
    if calls is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return 0 if libc.syscall(calls[which], *args) == 0 else ctypes.get_errno()
    except (OSError, AttributeError):  # (no libc to load, no syscall symbol)
        return None


def request_short_slice(slice_ns: int = SHORT_SLICE_NS) -> int | None:
    """Ask for ``slice_ns`` for this thread and what it starts from now on.

    Returns the slice now in force, in nanoseconds, or None where the kernel
    grants none (no such call here, a refusal, or a kernel before 6.12,
    which takes the request and ignores it). Never raises: a slice is a
    refinement, not a condition for running.
    """
    try:
        policy, nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):  # (no such calls on this OS)
        return None
    if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
        return None  # (real-time or idle: someone chose it on purpose)
    attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, policy, 0, nice, 0, slice_ns, 0, 0))
    err = _syscall(0, 0, attr, 0)
    if err:
        log.debug("no short time slice: sched_setattr: %s", os.strerror(err))
    if err != 0:
        return None
    granted = current_slice(0)
    return granted if granted == slice_ns else None  # (kernels before 6.12 take the request and ignore it)


def current_slice(tid: int) -> int | None:
    """The time slice of thread ``tid`` (0: this one) in nanoseconds, or None where the kernel does not say."""
    attr = ctypes.create_string_buffer(_ATTR.size)
    if _syscall(1, tid, attr, _ATTR.size, 0) != 0:
        return None
    runtime: int = _ATTR.unpack(attr.raw)[5]
    return runtime or None

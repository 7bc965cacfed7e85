"""The user's private runtime directory: where a node's ipc sockets and the per-user secret live.

One directory per user and machine, as ``$XDG_RUNTIME_DIR`` is meant for:

- ``$GORILIX_RUNTIME_DIR`` when set (created if missing);
- else ``$XDG_RUNTIME_DIR/gorilix`` (systemd makes ``$XDG_RUNTIME_DIR``
  per user, mode 0700, on login);
- else ``gorilix-<uid>`` in the temporary directory (``/tmp``).

Whichever it is, it must be a real directory (not a symbolic link) owned by
this user, with no access for the group or others (mode 0700). One that is
not is refused, never "fixed": in ``/tmp`` another user could have made it
first, to read what we put there or to plant sockets of their own. What lives
there is the node's business only: the ipc socket its workers and its
program's threads connect to, the workers' health boards, and the per-user
cluster secret (:mod:`gorilix.cluster.keyfile`). So no other user of the
machine can connect to a node's ipc socket, whatever the umask.
"""

from __future__ import annotations

import os
import stat
import tempfile

from gorilix.transport.errors import GorilixError

#: The environment variable that names the runtime directory (tests point it at a temporary one).
RUNTIME_ENV = "GORILIX_RUNTIME_DIR"


class RuntimeDirError(GorilixError):
    """The runtime directory cannot be used (someone else's, open to others, not a directory)."""


def runtime_dir_path() -> tuple[str, str]:
    """Where the runtime directory is (neither made nor checked), and why there, for messages."""
    chosen = os.environ.get(RUNTIME_ENV)
    if chosen:
        return os.path.abspath(chosen), f"(from {RUNTIME_ENV})"
    if os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "gorilix"), "(in $XDG_RUNTIME_DIR)"
    return os.path.join(tempfile.gettempdir(), f"gorilix-{os.getuid()}"), "(no $XDG_RUNTIME_DIR)"


def runtime_dir() -> str:
    """The user's private runtime directory, created (mode 0700) if missing and checked; RuntimeDirError if unusable."""
    path, why = runtime_dir_path()
    chosen = bool(os.environ.get(RUNTIME_ENV))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        if not chosen:
            raise RuntimeDirError(f"cannot create the runtime directory {path} {why}: its parent is missing; "
                                  f"set {RUNTIME_ENV} to a directory of yours") from None
        os.makedirs(path, 0o700)
    except OSError as exc:
        raise RuntimeDirError(f"cannot create the runtime directory {path} {why}: {exc.strerror}; "
                              f"set {RUNTIME_ENV} to a directory of yours") from None
    check_private(path, what="runtime directory", directory=True)
    return path


def check_private(path: str, *, what: str, directory: bool) -> None:
    """Refuse ``path`` unless it is a directory (or a regular file) of this user's, closed to everyone else."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirError(f"cannot use the {what} {path}: {exc.strerror}") from None
    hint = f"remove it, or set {RUNTIME_ENV} to a directory of yours" if directory else "remove it"
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory" if directory else \
            "not a regular file"
        raise RuntimeDirError(f"refusing the {what} {path}: it is {kind}; {hint}")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(f"refusing the {what} {path}: it belongs to uid {info.st_uid}, not to this "
                              f"user (uid {os.getuid()}); {hint}")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        fix = f"chmod {'700' if directory else '600'} {path}"
        raise RuntimeDirError(f"refusing the {what} {path}: mode {mode:04o} lets other users in; {fix}")

"""Secret files: one format for the library and the CLI, and the per-user secret (Erlang's cookie).

The format is the one ``--secret-file`` has always read: the file's bytes,
less a trailing newline, at least :data:`MIN_SECRET_BYTES` of them. Every key
is derived from those bytes (:mod:`gorilix.cluster.security`), so any file of
16 bytes or more works; what this module writes is 32 random bytes in base64
and a newline (44 printable characters), the same as
``head -c 32 /dev/urandom | base64``, so it can be copied, pasted and
diffed.

The per-user secret is ``secret`` in the user's private runtime directory
(:mod:`gorilix.transport.runtime`). The first node of the user's that needs
it (one started without a secret) creates it, mode 0600, atomically: two
nodes that start together end up with the same one. Clients on the machine
(the CLI, ``ActorSystem.connect``) read it when given no secret, so a user's
nodes cluster with each other, and the user's tools reach them, with no
set-up, while no other user of the machine gets in.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from gorilix.transport.errors import ClusterError
from gorilix.transport.runtime import RuntimeDirError, check_private, runtime_dir, runtime_dir_path

#: The shortest secret a cluster accepts, in bytes.
MIN_SECRET_BYTES = 16
#: Random bytes in a secret this module makes (written in base64).
NEW_SECRET_BYTES = 32
#: The per-user secret's file name, in the runtime directory.
DEFAULT_SECRET_NAME = "secret"


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The cluster secret stored in ``path`` (trailing newline stripped); ClusterError if unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ClusterError(f"cannot read secret file {os.fspath(path)}: {exc.strerror}") from None
    secret = data.rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise ClusterError(
            f"secret file {os.fspath(path)} holds {len(secret)} bytes; a secret needs at least "
            f"{MIN_SECRET_BYTES} (make one with: gorilix secret new {os.fspath(path)})"
        )
    return secret


def new_secret() -> bytes:
    """A fresh secret as a file holds it: 32 random bytes in base64, and a newline."""
    return base64.b64encode(os.urandom(NEW_SECRET_BYTES)) + b"\n"


def write_secret_file(path: str | os.PathLike[str]) -> bytes:
    """Write a new secret to ``path``, mode 0600, never over an existing file; returns the secret.

    Atomic: the secret is written to a temporary file beside ``path`` and
    linked into place, so nobody ever reads ``path`` half-written, and of two
    writers at once exactly one wins (the other gets FileExistsError and can
    read the winner's).
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    temporary = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}.{os.urandom(4).hex()}")
    data = new_secret()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, target)  # (fails if the target exists, like O_EXCL)
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass
    return data.rstrip(b"\n")


def default_secret_path() -> Path:
    """Where the per-user secret lives: ``secret`` in the runtime directory (created and checked)."""
    try:
        return Path(runtime_dir()) / DEFAULT_SECRET_NAME
    except RuntimeDirError as exc:
        raise ClusterError(str(exc)) from None


def default_secret_location() -> Path:
    """Where the per-user secret is or would be; makes and checks nothing (for messages)."""
    return Path(runtime_dir_path()[0]) / DEFAULT_SECRET_NAME


def default_secret(create: bool) -> bytes | None:
    """The per-user secret; made first if ``create`` and it is missing (None if missing otherwise).

    The file must be a regular file of this user's that no one else may read
    (mode 0600): one that is not is refused with ClusterError, not used.
    """
    path = default_secret_path()
    if not path.exists() and not path.is_symlink():
        if not create:
            return None
        try:
            write_secret_file(path)
        except FileExistsError:
            pass  # another node of ours made it meanwhile: use theirs
        except OSError as exc:
            raise ClusterError(f"cannot write the per-user secret {path}: {exc.strerror}") from None
    try:
        check_private(os.fspath(path), what="per-user secret", directory=False)
    except RuntimeDirError as exc:
        raise ClusterError(str(exc)) from None
    return read_secret_file(path)

"""Values as error messages show them: a short repr that never raises.

A message about a bad argument shows what was passed, and showing it must not
fail in turn: ``f"{value!r:.80}"`` raises ValueError for an int of more than
4300 digits (Python's int-to-str limit, ``sys.get_int_max_str_digits()``), and
a user's ``__repr__`` may raise anything. Every layer formats with
:func:`shown`, so a bad argument is always reported as the error meant for it.
"""

from __future__ import annotations

import signal

#: How long a shown value may be, in characters (longer ones are cut, ending in "...").
SHOWN_MAX = 80


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """``repr(value)``, cut to ``limit`` characters, for an error message; it never raises.

    An int too long to print is described by its size ("an int of 16610
    bits"), and a value whose repr fails by its type.
    """
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits(), or a container holding one
        if isinstance(value, int):
            return f"an int of {value.bit_length()} bits"
        return f"a {type(value).__name__} too long to show"
    except Exception:  # a user's __repr__ that fails
        return f"a {type(value).__name__} whose repr() fails"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


__all__ = ["SHOWN_MAX", "shown"]


def describe_exit(code: int | None) -> str:
    """A process's exit status as logs and errors say it (``code`` as multiprocessing and subprocess give it)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"

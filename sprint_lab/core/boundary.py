"""Input boundaries: functions that check untrusted input themselves.

The test suite runs every function of the package under a runtime type checker (jaxtyping's
import hook with beartype), so a wrong shape or type anywhere inside fails loudly. A few public
entry points, though, exist to *validate* what a user passes (a head given as ``(True, 1)`` or
``(0.9, 1.9)``, a NaN mask, a negative temperature) and answer with a ``ValueError`` that names
the problem. Under the runtime checker such a call would stop at a generic type error before the
function could say what is wrong, and the tests of those messages would test the checker instead.

:func:`no_type_check` marks such a boundary. The import hook skips any function or class
decorated with a decorator of that name (it matches the name, like :func:`typing.no_type_check`),
while static type checkers (pyright) still check it, because this is not
:func:`typing.no_type_check`. It changes nothing at run time.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def no_type_check(obj: T) -> T:
    """Mark ``obj`` (a function or class) as a validating boundary; returns it unchanged.

    Example:
        >>> @no_type_check
        ... def parse_layer(value: int) -> int:
        ...     if isinstance(value, bool) or not isinstance(value, int):
        ...         raise ValueError(f"layer must be an int, got {value!r}")
        ...     return value
        >>> parse_layer(3)
        3
    """
    return obj

"""Named errors, each with the exit code the ``sprint-lab`` command gives it.

Every anticipated failure is one of three kinds, told apart by what the user must change:

* :class:`InputError` (exit code 2): the arguments or the data given are wrong (a head the model
  lacks, a prompt longer than the context, a negative temperature, a dataset edited under a
  stored sweep). It is a :class:`ValueError`, so ``except ValueError`` keeps working.
* :class:`SetupError` (exit code 3): the machine is not ready (a dataset not downloaded, CUDA
  asked for on a CPU box, a full disk, a results folder locked by another sweep, a corrupt part
  file to repair).
* an interrupt (``KeyboardInterrupt``, exit code 130) keeps every finished batch.

The command line prints such an error as one line on stderr and exits with
:attr:`SprintLabError.exit_code`; ``--debug`` shows the traceback.

Example:
    >>> error = InputError("temperature must be >= 0, got -1")
    >>> isinstance(error, ValueError), error.exit_code
    (True, 2)
    >>> SetupError("disk full").exit_code
    3
"""

from __future__ import annotations

__all__ = ["InputError", "SetupError", "SprintLabError"]


class SprintLabError(Exception):
    """Base of sprint_lab's named errors.

    Attributes:
        exit_code: what ``sprint-lab`` exits with when this error ends a command.
    """

    exit_code: int = 1


class InputError(SprintLabError, ValueError):
    """The arguments or data are wrong; the message names the file, field, head or setting."""

    exit_code = 2


class SetupError(SprintLabError, RuntimeError):
    """The environment is not ready (missing data or device, full disk, locked or corrupt store)."""

    exit_code = 3

"""Seeded, offline grade-school word problems ("arith") with five difficulty levels.

Tiny models (e.g. the 135M-parameter SmolLM2) solve almost no GSM8K problems, so head-pruning
effects are invisible there. This generator writes GSM8K-style problems whose difficulty is
controlled: level 1 is one addition or subtraction with numbers under 10, level 2 one step with
larger numbers, and each further level adds a step. Solutions follow the GSM8K style (calculator
annotations ``<<a*b=c>>`` and a final ``#### N``) and every answer is an integer of at least 2.

Level design (``steps`` = arithmetic operations in the worked solution; the templates are in
:mod:`sprint_lab.tasks.arith_templates`):

- 1: one step, ``+``/``-`` with operands 2-9 ("Tom has 3 apples and buys 4 more...").
- 2: one step: ``+``/``-`` of a number in 10-20 and one in 2-9, or ``*``/``/`` with factors 2-5.
- 3: two steps with one-digit inputs (products up to about 50).
- 4: three steps, numbers up to about 100.
- 5: four or five steps, numbers up to several hundred.

Example:
    >>> from sprint_lab.tasks.arith import generate_arith
    >>> p = generate_arith(5, seed=0)[0]
    >>> p.id, p.level, p.solution.splitlines()[-1] == f"#### {p.answer}"
    ('arith-0-00000', 1, True)
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from sprint_lab.tasks.arith_templates import ARITH_TEMPLATES
from sprint_lab.tasks.records import Problem

__all__ = ["ARITH_SPLITS", "ARITH_TEMPLATES", "arith_split", "generate_arith"]

#: Generator seed and size of the fixed pools behind ``load_problems("arith", split)``.
#: The train pool drops every question that also occurs in the test pool.
ARITH_SPLITS: dict[str, tuple[int, int]] = {"test": (0, 1000), "train": (1, 5000)}

_MAX_TRIES = 10_000


def generate_arith(
    n: int = 200, *, seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4, 5)
) -> list[Problem]:
    """Generate ``n`` distinct word problems, cycling through ``levels``.

    Problem ``i`` has level ``levels[i % len(levels)]`` and a template drawn at random among
    those available at that level; the same ``(n, seed, levels)`` always gives the same list,
    and a shorter list is a prefix of a longer one.

    Args:
        n: Number of problems.
        seed: Seed of the ``random.Random`` stream; it is also part of the ids.
        levels: Difficulty levels to use (each in 1-5).

    Returns:
        Problems with ids ``arith-{seed}-{index:05d}``, ``source="arith"``, ``level`` set,
        ``subject`` = template name and a GSM8K-style ``solution`` ending ``#### N``.

    Raises:
        ValueError: Bad ``n`` or ``levels``, or the level's question space is exhausted.

    Example:
        >>> [p.level for p in generate_arith(4, seed=3, levels=(1, 2))]
        [1, 2, 1, 2]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    levels = tuple(levels)
    if not levels or any(lv not in (1, 2, 3, 4, 5) for lv in levels):
        raise ValueError(f"levels must be a non-empty sequence of ints in 1-5, got {levels!r}")
    rng = random.Random(seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    for index in range(n):
        level = levels[index % len(levels)]
        names = [name for name, (_, lowest) in ARITH_TEMPLATES.items() if level >= lowest]
        for _ in range(_MAX_TRIES):
            subject = rng.choice(names)
            draft = ARITH_TEMPLATES[subject][0](rng, level)
            if draft.question not in seen and draft.answer >= 2:  # no "1 years", "1 dollars"
                break
        else:
            raise ValueError(
                f"could not find a new level-{level} question after {_MAX_TRIES} tries"
            )
        seen.add(draft.question)
        problems.append(
            Problem(
                id=f"arith-{seed}-{index:05d}",
                question=draft.question,
                answer=str(draft.answer),
                solution="\n".join(draft.steps) + f"\n#### {draft.answer}",
                level=level,
                subject=subject,
                source="arith",
            )
        )
    return problems


@functools.cache
def _split_pool(split: str) -> tuple[Problem, ...]:
    seed, size = ARITH_SPLITS[split]
    pool = generate_arith(size, seed=seed)
    if split != "test":
        test_questions = {p.question for p in _split_pool("test")}
        pool = [p for p in pool if p.question not in test_questions]
    return tuple(pool)


def arith_split(split: str = "test") -> list[Problem]:
    """The fixed arith pool of a split (see :data:`ARITH_SPLITS`); train and test are disjoint.

    Args:
        split: ``"test"`` or ``"train"``.

    Returns:
        A new list of the split's problems (all five levels, equally many of each).

    Raises:
        ValueError: Unknown split.

    Example:
        >>> len(arith_split("test"))
        1000
    """
    if split not in ARITH_SPLITS:
        raise ValueError(f"arith has no split {split!r}; valid splits: {', '.join(ARITH_SPLITS)}")
    return list(_split_pool(split))

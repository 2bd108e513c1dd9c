"""Seeded, offline grade-school word problems ("arith") with five difficulty levels.

Tiny models (e.g. the 135M-parameter SmolLM2) solve almost no GSM8K problems, so head-pruning
effects are invisible there. This generator writes GSM8K-style problems whose difficulty is
controlled: level 1 is one addition or subtraction with numbers under 10, level 2 one step with
larger numbers, and each further level adds a step. Solutions follow the GSM8K style (calculator
annotations ``<<a*b=c>>`` and a final ``#### N``) and every answer is an integer of at least 2.

Level design (``steps`` = arithmetic operations in the worked solution):

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sprint_lab.tasks.problems import Problem

__all__ = ["ARITH_SPLITS", "ARITH_TEMPLATES", "arith_split", "generate_arith"]

#: Generator seed and size of the fixed pools behind ``load_problems("arith", split)``.
#: The train pool drops every question that also occurs in the test pool.
ARITH_SPLITS: dict[str, tuple[int, int]] = {"test": (0, 1000), "train": (1, 5000)}

_MAX_TRIES = 10_000


@dataclass(frozen=True)
class _Person:
    name: str
    he: str
    his: str
    him: str


_PEOPLE: tuple[_Person, ...] = tuple(
    _Person(name, *(("he", "his", "him") if g == "m" else ("she", "her", "her")))
    for name, g in [
        ("Tom", "m"), ("Anna", "f"), ("Sam", "m"), ("Lily", "f"), ("Ben", "m"), ("Mia", "f"),
        ("Jack", "m"), ("Emma", "f"), ("Leo", "m"), ("Zoe", "f"), ("Max", "m"), ("Lucy", "f"),
        ("Omar", "m"), ("Nina", "f"), ("Ravi", "m"), ("Sara", "f"), ("Carlos", "m"),
        ("Grace", "f"), ("Ken", "m"), ("Amy", "f"),
    ]
)  # fmt: skip

_THINGS: tuple[tuple[str, str], ...] = (
    ("apple", "apples"), ("pencil", "pencils"), ("marble", "marbles"), ("sticker", "stickers"),
    ("cookie", "cookies"), ("book", "books"), ("ball", "balls"), ("card", "cards"),
    ("orange", "oranges"), ("shell", "shells"), ("toy car", "toy cars"), ("flower", "flowers"),
)  # fmt: skip

_GOODS: tuple[tuple[str, str], ...] = (
    ("pen", "pens"), ("notebook", "notebooks"), ("cupcake", "cupcakes"), ("toy", "toys"),
    ("comic book", "comic books"), ("bottle of juice", "bottles of juice"), ("kite", "kites"),
    ("sandwich", "sandwiches"), ("puzzle", "puzzles"), ("plant", "plants"),
)  # fmt: skip

_BIG_ITEMS = ("bike helmet", "board game", "backpack", "pair of shoes", "video game", "jacket")
_RELATIVES = ("sister", "brother", "cousin", "friend")
_PARENTS = ("mother", "father", "aunt", "uncle")
_MOVERS = ("car", "train", "bus", "truck", "boat")
_BAKED = ("muffins", "cookies", "rolls", "pies", "cupcakes")


@dataclass(frozen=True)
class _Draft:
    question: str
    steps: tuple[str, ...]
    answer: int


def _calc(expr: str, value: int) -> str:
    """``"3 + 4"`` -> ``"3 + 4 = <<3+4=7>>7"`` (GSM8K calculator annotation)."""
    return f"{expr} = <<{expr.replace(' ', '')}={value}>>{value}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _add_or_sub(rng: random.Random, level: int) -> tuple[int, int, bool]:
    """Operands of a one-step ``+``/``-`` problem and whether it is an addition.

    Level 1: both in 2-9 (a difference is at least 2); level 2: 10-20 and 2-9 (in that order).
    """
    add = rng.random() < 0.5
    if level >= 2:
        return rng.randint(10, 20), rng.randint(2, 9), add
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    if not add:
        while abs(a - b) < 2:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
        a, b = max(a, b), min(a, b)
    return a, b, add


def _round_up(total: int, bills: Sequence[int]) -> int:
    """Smallest bill strictly larger than ``total`` (or the next multiple of 100)."""
    for bill in bills:
        if bill > total:
            return bill
    return (total // 100 + 1) * 100


# --------------------------------------------------------------------------------------------
# Templates: each maps (rng, level) -> _Draft
# --------------------------------------------------------------------------------------------


def _shopping(rng: random.Random, level: int) -> _Draft:
    p = rng.choice(_PEOPLE)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            one, many = rng.choice(_GOODS)
            q, price = rng.randint(2, 5), rng.randint(2, 5)
            v = q * price
            return _Draft(
                f"{p.name} buys {q} {many}. Each {one} costs ${price}. "
                f"How much money does {p.name} spend?",
                (f"{p.name} spends {_calc(f'{q} * {price}', v)} dollars.",),
                v,
            )
        _, many = rng.choice(_THINGS)
        a, b, add = _add_or_sub(rng, level)
        if add:
            q = (
                f"{p.name} has {a} {many} and buys {b} more. "
                f"How many {many} does {p.name} have now?"
            )
            return _Draft(q, (f"{p.name} has {_calc(f'{a} + {b}', a + b)} {many} now.",), a + b)
        q = (
            f"{p.name} has {a} {many} and sells {b} of them. "
            f"How many {many} does {p.name} have left?"
        )
        return _Draft(q, (f"{p.name} has {_calc(f'{a} - {b}', a - b)} {many} left.",), a - b)
    one, many = rng.choice(_GOODS)
    if level == 3:
        q, price, extra = rng.randint(2, 5), rng.randint(2, 5), rng.randint(2, 9)
        big = rng.choice(_BIG_ITEMS)
        x = q * price
        return _Draft(
            f"{p.name} buys {q} {many} for ${price} each and a {big} for ${extra}. "
            f"How much money does {p.name} spend in total?",
            (
                f"The {many} cost {_calc(f'{q} * {price}', x)} dollars.",
                f"In total {p.he} spends {_calc(f'{x} + {extra}', x + extra)} dollars.",
            ),
            x + extra,
        )
    if level == 4:
        q, price, extra = rng.randint(3, 12), rng.randint(3, 9), rng.randint(10, 40)
        big = rng.choice(_BIG_ITEMS)
        x = q * price
        total = x + extra
        bill = _round_up(total, (20, 50, 100, 200))
        return _Draft(
            f"{p.name} buys {q} {many} for ${price} each and a {big} for ${extra}. "
            f"{_cap(p.he)} pays with a ${bill} bill. How much change does {p.name} get?",
            (
                f"The {many} cost {_calc(f'{q} * {price}', x)} dollars.",
                f"Everything costs {_calc(f'{x} + {extra}', total)} dollars.",
                f"{_cap(p.his)} change is {_calc(f'{bill} - {total}', bill - total)} dollars.",
            ),
            bill - total,
        )
    one2, many2 = rng.choice([g for g in _GOODS if g[0] != one])
    q1, p1 = rng.randint(4, 15), rng.randint(6, 25)
    q2, p2 = rng.randint(3, 12), rng.randint(4, 19)
    x1, x2 = q1 * p1, q2 * p2
    total = x1 + x2
    bill = _round_up(total, (100, 200, 500, 1000))
    return _Draft(
        f"{p.name} buys {q1} {many} for ${p1} each and {q2} {many2} for ${p2} each. "
        f"{_cap(p.he)} pays with ${bill}. How much change does {p.name} get?",
        (
            f"The {many} cost {_calc(f'{q1} * {p1}', x1)} dollars.",
            f"The {many2} cost {_calc(f'{q2} * {p2}', x2)} dollars.",
            f"Together they cost {_calc(f'{x1} + {x2}', total)} dollars.",
            f"{_cap(p.his)} change is {_calc(f'{bill} - {total}', bill - total)} dollars.",
        ),
        bill - total,
    )


def _rates(rng: random.Random, level: int) -> _Draft:
    p = rng.choice(_PEOPLE)
    mover = rng.choice(_MOVERS)
    if level == 1 or (level == 2 and rng.random() < 0.5):
        a, b, add = _add_or_sub(rng, level)
        if add:
            return _Draft(
                f"{p.name} reads {a} pages in the morning and {b} pages in the evening. "
                f"How many pages does {p.name} read in total?",
                (f"{p.name} reads {_calc(f'{a} + {b}', a + b)} pages in total.",),
                a + b,
            )
        return _Draft(
            f"A book has {a} pages. {p.name} has read {b} pages. How many pages are left to read?",
            (f"There are {_calc(f'{a} - {b}', a - b)} pages left.",),
            a - b,
        )
    if level == 2:
        r, h = rng.randint(2, 5), rng.randint(2, 5)
        return _Draft(
            f"{p.name} reads {r} pages every day. How many pages does {p.he} read in {h} days?",
            (f"{p.name} reads {_calc(f'{r} * {h}', r * h)} pages.",),
            r * h,
        )
    if level == 3:
        r, h, m = rng.randint(2, 9), rng.randint(2, 5), rng.randint(2, 9)
        x = r * h
        return _Draft(
            f"A {mover} travels {r} miles every hour for {h} hours. Then it travels {m} more "
            f"miles. How many miles does the {mover} travel in total?",
            (
                f"In {h} hours it travels {_calc(f'{r} * {h}', x)} miles.",
                f"In total it travels {_calc(f'{x} + {m}', x + m)} miles.",
            ),
            x + m,
        )
    r1, h1 = rng.randint(20, 70), rng.randint(2, 6)
    r2, h2 = rng.randint(15, 60), rng.randint(2, 5)
    x1, x2 = r1 * h1, r2 * h2
    total = x1 + x2
    text = (
        f"A {mover} travels at {r1} miles per hour for {h1} hours, and then at {r2} miles per hour "
        f"for {h2} hours."
    )
    steps = (
        f"First it travels {_calc(f'{r1} * {h1}', x1)} miles.",
        f"Then it travels {_calc(f'{r2} * {h2}', x2)} miles.",
        f"In total it travels {_calc(f'{x1} + {x2}', total)} miles.",
    )
    if level == 4:
        return _Draft(f"{text} How many miles does the {mover} travel in total?", steps, total)
    trip = (total // 50 + rng.randint(2, 6)) * 50
    return _Draft(
        f"{text} The whole trip is {trip} miles long. How many miles are still left?",
        (*steps, f"There are {_calc(f'{trip} - {total}', trip - total)} miles left."),
        trip - total,
    )


def _sharing(rng: random.Random, level: int) -> _Draft:
    p = rng.choice(_PEOPLE)
    one, many = rng.choice(_THINGS)
    if level == 1:
        a, b, add = _add_or_sub(rng, 1)
        if add:
            return _Draft(
                f"{p.name} has {a} {many}. A friend gives {p.him} {b} more. "
                f"How many {many} does {p.name} have now?",
                (f"{p.name} has {_calc(f'{a} + {b}', a + b)} {many} now.",),
                a + b,
            )
        return _Draft(
            f"{p.name} has {a} {many} and gives {b} to a friend. "
            f"How many {many} does {p.name} have left?",
            (f"{p.name} has {_calc(f'{a} - {b}', a - b)} {many} left.",),
            a - b,
        )
    if level == 2:
        k, each = rng.randint(2, 5), rng.randint(2, 5)
        total = k * each
        return _Draft(
            f"{p.name} has {total} {many} and shares them equally among {k} friends. "
            f"How many {many} does each friend get?",
            (f"Each friend gets {_calc(f'{total} / {k}', each)} {many}.",),
            each,
        )
    while True:
        packs, size = (
            (rng.randint(2, 5), rng.randint(2, 5))
            if level == 3
            else (
                rng.randint(2, 9),
                rng.randint(4, 12),
            )
        )
        total = packs * size
        keep = 0 if level == 3 else rng.randint(1, max(1, total // 4))
        rest = total - keep
        ks = [k for k in range(2, 10) if rest % k == 0 and rest // k >= 2]
        if ks:
            break
    k = rng.choice(ks)
    each = rest // k
    intro = f"{p.name} has {packs} packs of {many} with {size} {many} in each pack."
    steps = [f"{p.name} has {_calc(f'{packs} * {size}', total)} {many}."]
    if level == 3:
        question = (
            f"{intro} {_cap(p.he)} shares them equally among {k} friends. "
            f"How many {many} does each friend get?"
        )
    else:
        question = (
            f"{intro} {_cap(p.he)} keeps {keep} for {p.him}self and shares the rest equally among "
            f"{k} friends."
        )
        steps.append(f"{_cap(p.he)} shares {_calc(f'{total} - {keep}', rest)} {many}.")
    steps.append(f"Each friend gets {_calc(f'{rest} / {k}', each)} {many}.")
    if level == 4:
        question += f" How many {many} does each friend get?"
        answer = each
    elif level >= 5:
        give = rng.randint(1, each - 1)
        question += (
            f" Then each friend gives {give} of their {many} to a little brother. "
            f"How many {many} does each friend have left?"
        )
        steps.append(f"Each friend has {_calc(f'{each} - {give}', each - give)} {many} left.")
        answer = each - give
    else:
        answer = each
    return _Draft(question, tuple(steps), answer)


def _ages(rng: random.Random, level: int) -> _Draft:
    p = rng.choice(_PEOPLE)
    rel, parent = rng.choice(_RELATIVES), rng.choice(_PARENTS)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            age, k = rng.randint(5, 9), rng.randint(4, 5)
            return _Draft(
                f"{p.name} is {age} years old. {_cap(p.his)} {parent} is {k} times as old as "
                f"{p.him}. How old is {p.his} {parent}?",
                (f"{_cap(p.his)} {parent} is {_calc(f'{age} * {k}', age * k)} years old.",),
                age * k,
            )
        a, b, add = _add_or_sub(rng, level)
        if add:
            return _Draft(
                f"{p.name} is {a} years old. How old will {p.he} be in {b} years?",
                (f"{p.name} will be {_calc(f'{a} + {b}', a + b)} years old.",),
                a + b,
            )
        return _Draft(
            f"{p.name} is {a} years old. {_cap(p.his)} {rel} is {b} years younger. "
            f"How old is {p.his} {rel}?",
            (f"{_cap(p.his)} {rel} is {_calc(f'{a} - {b}', a - b)} years old.",),
            a - b,
        )
    age, diff = rng.randint(4, 12), rng.randint(2, 6)
    older = age + diff
    k = rng.choice([k for k in (2, 3, 4) if 20 <= older * k <= 60])
    par = older * k
    text = (
        f"{p.name} is {age} years old. {_cap(p.his)} {rel} is {diff} years older than {p.him}. "
        f"Their {parent} is {k} times as old as the {rel}."
    )
    steps = [
        f"The {rel} is {_calc(f'{age} + {diff}', older)} years old.",
        f"The {parent} is {_calc(f'{older} * {k}', par)} years old.",
    ]
    if level == 3:
        return _Draft(f"{text} How old is the {parent}?", tuple(steps), par)
    later = rng.randint(3, 15)
    steps.append(f"In {later} years the {parent} will be {_calc(f'{par} + {later}', par + later)}.")
    if level == 4:
        return _Draft(
            f"{text} How old will the {parent} be in {later} years?", tuple(steps), par + later
        )
    me = age + later
    steps.append(f"In {later} years {p.name} will be {_calc(f'{age} + {later}', me)}.")
    steps.append(f"Together they will be {_calc(f'{par + later} + {me}', par + later + me)} years.")
    return _Draft(
        f"{text} In {later} years, what will be the sum of the ages of {p.name} and the {parent}?",
        tuple(steps),
        par + later + me,
    )


def _savings(rng: random.Random, level: int) -> _Draft:
    p = rng.choice(_PEOPLE)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            w, d = rng.randint(2, 5), rng.randint(2, 5)
            return _Draft(
                f"{p.name} earns ${w} every day. How much money does {p.he} earn in {d} days?",
                (f"{p.name} earns {_calc(f'{w} * {d}', w * d)} dollars.",),
                w * d,
            )
        a, b, add = _add_or_sub(rng, level)
        if add:
            return _Draft(
                f"{p.name} has ${a}. {_cap(p.his)} mom gives {p.him} ${b}. "
                f"How much money does {p.name} have now?",
                (f"{p.name} has {_calc(f'{a} + {b}', a + b)} dollars now.",),
                a + b,
            )
        return _Draft(
            f"{p.name} has ${a} and spends ${b} on a snack. "
            f"How much money does {p.name} have left?",
            (f"{p.name} has {_calc(f'{a} - {b}', a - b)} dollars left.",),
            a - b,
        )
    big = rng.choice(_BIG_ITEMS)
    if level == 3:
        w, d = rng.randint(2, 9), rng.randint(2, 5)
        earned = w * d
        spend = rng.randint(2, earned - 2)
        return _Draft(
            f"{p.name} earns ${w} every day for {d} days. Then {p.he} spends ${spend} on a {big}. "
            f"How much money does {p.name} have left?",
            (
                f"{p.name} earns {_calc(f'{w} * {d}', earned)} dollars.",
                f"{_cap(p.he)} has {_calc(f'{earned} - {spend}', earned - spend)} dollars left.",
            ),
            earned - spend,
        )
    if level == 4:
        w, d, gift = rng.randint(5, 15), rng.randint(4, 9), rng.randint(10, 50)
        saved = w * d
        total = saved + gift
        spend = rng.randint(10, total - 1)
        return _Draft(
            f"{p.name} saves ${w} every week for {d} weeks. {_cap(p.his)} grandma gives {p.him} "
            f"${gift}. Then {p.he} buys a {big} for ${spend}. "
            f"How much money does {p.name} have now?",
            (
                f"{p.name} saves {_calc(f'{w} * {d}', saved)} dollars.",
                f"With the gift {p.he} has {_calc(f'{saved} + {gift}', total)} dollars.",
                f"After shopping {p.he} has {_calc(f'{total} - {spend}', total - spend)} dollars.",
            ),
            total - spend,
        )
    w, h, d = rng.randint(8, 20), rng.randint(2, 6), rng.randint(3, 6)
    daily = w * h
    earned = daily * d
    spend = rng.randint(20, earned - 2)
    if (earned - spend) % 2:
        spend += 1
    rest = earned - spend
    return _Draft(
        f"{p.name} earns ${w} per hour and works {h} hours every day for {d} days. "
        f"{_cap(p.he)} spends ${spend} on a {big} and puts half of the rest in the bank. "
        f"How much money does {p.name} put in the bank?",
        (
            f"Each day {p.he} earns {_calc(f'{w} * {h}', daily)} dollars.",
            f"In {d} days {p.he} earns {_calc(f'{daily} * {d}', earned)} dollars.",
            f"After shopping {p.he} has {_calc(f'{earned} - {spend}', rest)} dollars.",
            f"{_cap(p.he)} puts {_calc(f'{rest} / 2', rest // 2)} dollars in the bank.",
        ),
        rest // 2,
    )


def _combo(rng: random.Random, level: int) -> _Draft:
    """Multi-step combination (levels 3-5): produce, lose some, sell, subtract costs."""
    baked = rng.choice(_BAKED)
    trays, per = (
        (rng.randint(2, 4), rng.randint(2, 5))
        if level == 3
        else (
            rng.randint(2, 9),
            rng.randint(4, 12),
        )
    )
    made = trays * per
    price = rng.randint(2, 3 if level == 3 else 9)
    intro = f"A bakery makes {trays} trays of {baked} with {per} {baked} on each tray."
    steps = [f"The bakery makes {_calc(f'{trays} * {per}', made)} {baked}."]
    if level == 3:
        return _Draft(
            f"{intro} It sells all of them for ${price} each. How much money does it make?",
            (*steps, f"It makes {_calc(f'{made} * {price}', made * price)} dollars."),
            made * price,
        )
    burnt = rng.randint(1, max(1, made // 5))
    sold = made - burnt
    income = sold * price
    text = (
        f"{intro} {burnt} of them are burnt and thrown away. The rest are sold for ${price} each."
    )
    steps += [
        f"It sells {_calc(f'{made} - {burnt}', sold)} {baked}.",
        f"It makes {_calc(f'{sold} * {price}', income)} dollars.",
    ]
    if level == 4:
        return _Draft(f"{text} How much money does the bakery make?", tuple(steps), income)
    cost = rng.randint(10, income - 1)
    return _Draft(
        f"{text} The ingredients cost ${cost}. How much profit does the bakery make?",
        (*steps, f"The profit is {_calc(f'{income} - {cost}', income - cost)} dollars."),
        income - cost,
    )


#: Template name -> (generator, lowest level it is used for). The name becomes ``subject``.
ARITH_TEMPLATES: dict[str, tuple[Callable[[random.Random, int], _Draft], int]] = {
    "shopping": (_shopping, 1),
    "rates": (_rates, 1),
    "sharing": (_sharing, 1),
    "ages": (_ages, 1),
    "savings": (_savings, 1),
    "combo": (_combo, 3),
}


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

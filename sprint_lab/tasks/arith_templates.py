"""The arith word-problem templates: each writes one question and its worked solution.

A template is a function ``(rng, level) -> Draft``: it draws names, objects and numbers from a
``random.Random`` and returns the question, the solution steps (each with a GSM8K calculator
annotation ``<<a*b=c>>``) and the integer answer. The level sets the number of steps and the
size of the numbers (see :mod:`sprint_lab.tasks.arith`). Add a template by writing such a
function and adding it to :data:`ARITH_TEMPLATES` with the lowest level it supports.

Example:
    >>> import random
    >>> draft = ARITH_TEMPLATES["shopping"][0](random.Random(0), 3)
    >>> len(draft.steps), draft.answer >= 2
    (2, True)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ARITH_TEMPLATES", "Draft"]


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
class Draft:
    """One generated problem before it becomes a :class:`~sprint_lab.tasks.records.Problem`.

    Attributes:
        question: The question text.
        steps: The solution lines, each with a calculator annotation.
        answer: The final answer.
    """

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
# Templates: each maps (rng, level) -> Draft
# --------------------------------------------------------------------------------------------


def _shopping(rng: random.Random, level: int) -> Draft:
    p = rng.choice(_PEOPLE)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            one, many = rng.choice(_GOODS)
            q, price = rng.randint(2, 5), rng.randint(2, 5)
            v = q * price
            return Draft(
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
            return Draft(q, (f"{p.name} has {_calc(f'{a} + {b}', a + b)} {many} now.",), a + b)
        q = (
            f"{p.name} has {a} {many} and sells {b} of them. "
            f"How many {many} does {p.name} have left?"
        )
        return Draft(q, (f"{p.name} has {_calc(f'{a} - {b}', a - b)} {many} left.",), a - b)
    one, many = rng.choice(_GOODS)
    if level == 3:
        q, price, extra = rng.randint(2, 5), rng.randint(2, 5), rng.randint(2, 9)
        big = rng.choice(_BIG_ITEMS)
        x = q * price
        return Draft(
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
        return Draft(
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
    return Draft(
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


def _rates(rng: random.Random, level: int) -> Draft:
    p = rng.choice(_PEOPLE)
    mover = rng.choice(_MOVERS)
    if level == 1 or (level == 2 and rng.random() < 0.5):
        a, b, add = _add_or_sub(rng, level)
        if add:
            return Draft(
                f"{p.name} reads {a} pages in the morning and {b} pages in the evening. "
                f"How many pages does {p.name} read in total?",
                (f"{p.name} reads {_calc(f'{a} + {b}', a + b)} pages in total.",),
                a + b,
            )
        return Draft(
            f"A book has {a} pages. {p.name} has read {b} pages. How many pages are left to read?",
            (f"There are {_calc(f'{a} - {b}', a - b)} pages left.",),
            a - b,
        )
    if level == 2:
        r, h = rng.randint(2, 5), rng.randint(2, 5)
        return Draft(
            f"{p.name} reads {r} pages every day. How many pages does {p.he} read in {h} days?",
            (f"{p.name} reads {_calc(f'{r} * {h}', r * h)} pages.",),
            r * h,
        )
    if level == 3:
        r, h, m = rng.randint(2, 9), rng.randint(2, 5), rng.randint(2, 9)
        x = r * h
        return Draft(
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
        return Draft(f"{text} How many miles does the {mover} travel in total?", steps, total)
    trip = (total // 50 + rng.randint(2, 6)) * 50
    return Draft(
        f"{text} The whole trip is {trip} miles long. How many miles are still left?",
        (*steps, f"There are {_calc(f'{trip} - {total}', trip - total)} miles left."),
        trip - total,
    )


def _sharing(rng: random.Random, level: int) -> Draft:
    p = rng.choice(_PEOPLE)
    one, many = rng.choice(_THINGS)
    if level == 1:
        a, b, add = _add_or_sub(rng, 1)
        if add:
            return Draft(
                f"{p.name} has {a} {many}. A friend gives {p.him} {b} more. "
                f"How many {many} does {p.name} have now?",
                (f"{p.name} has {_calc(f'{a} + {b}', a + b)} {many} now.",),
                a + b,
            )
        return Draft(
            f"{p.name} has {a} {many} and gives {b} to a friend. "
            f"How many {many} does {p.name} have left?",
            (f"{p.name} has {_calc(f'{a} - {b}', a - b)} {many} left.",),
            a - b,
        )
    if level == 2:
        k, each = rng.randint(2, 5), rng.randint(2, 5)
        total = k * each
        return Draft(
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
    return Draft(question, tuple(steps), answer)


def _ages(rng: random.Random, level: int) -> Draft:
    p = rng.choice(_PEOPLE)
    rel, parent = rng.choice(_RELATIVES), rng.choice(_PARENTS)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            age, k = rng.randint(5, 9), rng.randint(4, 5)
            return Draft(
                f"{p.name} is {age} years old. {_cap(p.his)} {parent} is {k} times as old as "
                f"{p.him}. How old is {p.his} {parent}?",
                (f"{_cap(p.his)} {parent} is {_calc(f'{age} * {k}', age * k)} years old.",),
                age * k,
            )
        a, b, add = _add_or_sub(rng, level)
        if add:
            return Draft(
                f"{p.name} is {a} years old. How old will {p.he} be in {b} years?",
                (f"{p.name} will be {_calc(f'{a} + {b}', a + b)} years old.",),
                a + b,
            )
        return Draft(
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
        return Draft(f"{text} How old is the {parent}?", tuple(steps), par)
    later = rng.randint(3, 15)
    steps.append(f"In {later} years the {parent} will be {_calc(f'{par} + {later}', par + later)}.")
    if level == 4:
        return Draft(
            f"{text} How old will the {parent} be in {later} years?", tuple(steps), par + later
        )
    me = age + later
    steps.append(f"In {later} years {p.name} will be {_calc(f'{age} + {later}', me)}.")
    steps.append(f"Together they will be {_calc(f'{par + later} + {me}', par + later + me)} years.")
    return Draft(
        f"{text} In {later} years, what will be the sum of the ages of {p.name} and the {parent}?",
        tuple(steps),
        par + later + me,
    )


def _savings(rng: random.Random, level: int) -> Draft:
    p = rng.choice(_PEOPLE)
    if level <= 2:
        if level == 2 and rng.random() < 0.5:
            w, d = rng.randint(2, 5), rng.randint(2, 5)
            return Draft(
                f"{p.name} earns ${w} every day. How much money does {p.he} earn in {d} days?",
                (f"{p.name} earns {_calc(f'{w} * {d}', w * d)} dollars.",),
                w * d,
            )
        a, b, add = _add_or_sub(rng, level)
        if add:
            return Draft(
                f"{p.name} has ${a}. {_cap(p.his)} mom gives {p.him} ${b}. "
                f"How much money does {p.name} have now?",
                (f"{p.name} has {_calc(f'{a} + {b}', a + b)} dollars now.",),
                a + b,
            )
        return Draft(
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
        return Draft(
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
        return Draft(
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
    return Draft(
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


def _combo(rng: random.Random, level: int) -> Draft:
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
        return Draft(
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
        return Draft(f"{text} How much money does the bakery make?", tuple(steps), income)
    cost = rng.randint(10, income - 1)
    return Draft(
        f"{text} The ingredients cost ${cost}. How much profit does the bakery make?",
        (*steps, f"The profit is {_calc(f'{income} - {cost}', income - cost)} dollars."),
        income - cost,
    )


#: Template name -> (generator, lowest level it is used for). The name becomes ``subject``.
ARITH_TEMPLATES: dict[str, tuple[Callable[[random.Random, int], Draft], int]] = {
    "shopping": (_shopping, 1),
    "rates": (_rates, 1),
    "sharing": (_sharing, 1),
    "ages": (_ages, 1),
    "savings": (_savings, 1),
    "combo": (_combo, 3),
}

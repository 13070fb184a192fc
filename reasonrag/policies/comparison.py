"""Either-or questions ("Who was born first, A or B?"): the answer is one of the named options.

A span reader trained on a thousand questions cannot compare two dates; a few lines of date arithmetic
can. For a temporal comparison the option whose passage gives the earlier (or later) date wins; for any
other either-or question the reader's probability mass on each option decides.
"""

from __future__ import annotations

import re
from typing import Any

from reasonrag.data.rewards import normalize_answer

_OPTIONS = re.compile(r"(?:,|:|\bbetween\b)\s*([^,:?]+?)\s+or\s+([^,?]+?)\s*\??\s*$", re.IGNORECASE)
_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for m in names
}
_MONTH = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_PATTERNS = [
    re.compile(rf"\b(\d{{1,2}})\s+{_MONTH}\s+(\d{{3,4}})\b", re.IGNORECASE),  # 5 May 1950
    re.compile(rf"\b{_MONTH}\s+(\d{{1,2}}),?\s+(\d{{3,4}})\b", re.IGNORECASE),  # May 5, 1950
    re.compile(rf"\b{_MONTH}\s+(\d{{3,4}})\b", re.IGNORECASE),  # May 1950
    re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b"),  # 1950
]
_EARLIER = re.compile(r"\b(first|earlier|earliest|older|oldest|before|sooner)\b", re.IGNORECASE)
_LATER = re.compile(
    r"\b(later|latest|last|younger|youngest|more recent(ly)?|most recent(ly)?|newer|after)\b", re.IGNORECASE
)
_DEATH = re.compile(r"\b(died|die|death|passed away)\b", re.IGNORECASE)
_LIFESPAN = re.compile(r"\b(lived longer|longer life|live longer|lived a longer)\b", re.IGNORECASE)


def either_or_options(question: str) -> tuple[str, str] | None:
    """The two options of an "..., A or B?" question, or None."""
    m = _OPTIONS.search(question.strip())
    if not m:
        return None
    a, b = (x.strip(" \"'") for x in m.groups())
    if not a or not b or len(a.split()) > 8 or len(b.split()) > 8:
        return None
    return a, b


def dates(text: str) -> list[float]:
    """Dates in `text`, in order, as fractional years (1950.35 for early May 1950)."""
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in enumerate(_DATE_PATTERNS):
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            g = m.groups()
            if kind == 0:
                day, month, year = int(g[0]), _MONTHS[g[1].lower()], int(g[2])
            elif kind == 1:
                month, day, year = _MONTHS[g[0].lower()], int(g[1]), int(g[2])
            elif kind == 2:
                month, day, year = _MONTHS[g[0].lower()], 15, int(g[1])
            else:
                month, day, year = 6, 15, int(g[0])
            taken.append((m.start(), m.end()))
            found.append((m.start(), year + (month - 1) / 12 + (day - 1) / 365))
    return [value for _, value in sorted(found)]


def _passage_for(option: str, passages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The retrieved passage about `option`: its title first, then a first sentence naming it."""
    want = normalize_answer(option)
    if not want:
        return None
    by_title = [p for p in passages if normalize_answer(p["title"]) == want]
    by_title = by_title or [p for p in passages if normalize_answer(p["title"]).startswith(want)]
    if by_title:
        return by_title[0]
    for p in passages:
        if p["sentences"] and want in normalize_answer(p["sentences"][0]):
            return p
    return None


def missing_options(options: tuple[str, str], passages: list[dict[str, Any]]) -> list[str]:
    """The options without a retrieved passage of exactly their title: the ones worth searching by name.

    Only an exact title counts as found: "Justin Paul (cricketer)" may be a namesake of "Justin Paul".
    """
    titles = {normalize_answer(p["title"]) for p in passages}
    return [o for o in options if normalize_answer(o) not in titles]


def temporal_choice(question: str, options: tuple[str, str], passages: list[dict[str, Any]]) -> int | None:
    """Index of the option a temporal comparison picks from the passages' dates, or None if undecidable."""
    lifespan = bool(_LIFESPAN.search(question))
    earlier, later = bool(_EARLIER.search(question)), bool(_LATER.search(question))
    if not lifespan and earlier == later:
        return None
    death = bool(_DEATH.search(question))
    values = []
    for option in options:
        p = _passage_for(option, passages)
        if p is None:
            return None
        ds = dates(" ".join(p["sentences"][:2]))
        if lifespan:
            if len(ds) < 2:
                return None
            values.append(ds[1] - ds[0])
        elif death:
            if len(ds) < 2:
                return None
            values.append(ds[1])
        else:
            if not ds:
                return None
            values.append(ds[0])
    if values[0] == values[1]:
        return None
    if lifespan:
        return 0 if values[0] > values[1] else 1
    pick_earlier = earlier and not later
    return 0 if (values[0] < values[1]) == pick_earlier else 1


def option_mass(option: str, spans: list[tuple[str, float]]) -> float:
    """Reader probability on spans that name `option` (or that it names)."""
    want = normalize_answer(option)
    total = 0.0
    for text, p in spans:
        got = normalize_answer(text)
        if got and (got == want or got in want or want in got):
            total += p
    return total

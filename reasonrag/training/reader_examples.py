"""A supervised reader window and how an answer's tokens are found in it (shared by QA and cloze windows)."""

from __future__ import annotations

from dataclasses import dataclass

from reasonrag.policies.reader import Window


@dataclass
class Example:
    window: Window
    sentence_labels: list[float]  # per kept sentence; -1 = not supervised
    kind: int  # index in KINDS, -100 = not supervised
    start: int  # token index, -100 = not supervised
    end: int


def find_span(window: Window, answers: list[str], prefer: list[tuple[int, int]]) -> tuple[int, int] | None:
    """Token span of the first answer occurrence, preferring the character ranges in `prefer`."""
    low = window.context.lower()
    hits = []
    for answer in answers:
        a = answer.strip().lower()
        if not a:
            continue
        start = low.find(a)
        while start != -1:
            hits.append((start, start + len(a)))
            start = low.find(a, start + 1)
    if not hits:
        return None
    hits.sort(key=lambda h: (not any(p0 <= h[0] < p1 for p0, p1 in prefer), h[0]))
    for c0, c1 in hits:
        s = e = None
        for t, off in enumerate(window.offsets):
            if off is None:
                continue
            if s is None and off[0] <= c0 < max(off[1], off[0] + 1):
                s = t
            if off[0] < c1 <= off[1] or (s is not None and off[1] == c1):
                e = t
                break
        if s is not None and e is not None and e >= s:
            return s, e
    return None

"""Names in evidence that the question does not give: guesses at the bridge entity a later hop must find.

Multi-hop questions hide their bridge ("the woman who portrayed Corliss Archer"); the evidence of an
earlier hop names it ("... starring Shirley Temple"). A later hop searches for that name together with what
the question asks of it (its relation words), rather than the whole question, whose words pull back the
passages already found.
"""

from __future__ import annotations

import re
from typing import Any

from reasonrag.data.rewards import normalize_answer

_WORD = re.compile(r"[^\s,;:()\[\]\"]+")
_SENTENCE_STARTS = {
    "the",
    "he",
    "she",
    "it",
    "they",
    "his",
    "her",
    "its",
    "their",
    "in",
    "on",
    "at",
    "a",
    "an",
    "this",
    "that",
    "these",
    "after",
    "before",
    "during",
    "as",
    "from",
    "by",
    "with",
}
_CONNECTORS = {"of", "the", "and", "de", "von", "van", "du", "la", "le", "del", "da", "di", "&"}


def name_runs(sentence: str) -> list[str]:
    """Runs of capitalised words (with connectors such as "of" inside); a sentence-opening "The" or "He" is no name."""
    words = [(m.group(0), m.start()) for m in _WORD.finditer(sentence)]
    runs: list[list[str]] = []
    current: list[str] = []
    for i, (word, _) in enumerate(words):
        core = word.strip(".'\u2019")
        capital = bool(core) and core[0].isupper() and (i > 0 or core.lower() not in _SENTENCE_STARTS)
        if capital:
            current.append(core)
        elif current and word.lower() in _CONNECTORS:
            current.append(word)
        else:
            if current:
                runs.append(current)
            current = []
        if word.endswith(".") and len(core) > 2 and current:  # a sentence or clause ends here
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    out = []
    for run in runs:
        while run and run[-1].lower() in _CONNECTORS:
            run = run[:-1]
        if run:
            out.append(" ".join(run))
    return out


def mentions(texts: list[str], question: str, limit: int = 3) -> list[str]:
    """Capitalised names in the sentences `texts` that the question does not name: bridge-entity guesses."""
    q = question.lower()
    out: list[str] = []
    for text in texts:
        for name in name_runs(text):
            if len(name) < 3 or name.lower() in q or name in out:
                continue
            out.append(name)
    # Full names before single words ("Shirley Temple" before "American"), first-found first.
    return sorted(out, key=lambda name: -min(len(name.split()), 2))[:limit]


# Words that say nothing about what is asked of the bridge: question words, articles, auxiliaries.
_FUNCTION_WORDS = set(
    """a an the of in on at to for from by with about as into and or but than then that this these those
    which who whom whose what when where why how is are was were be been being do does did has have had
    will would can could should may might shall it its he she his her they their them there here also both
    either neither not no yes same one""".split()
)


_PUNCT = "?.,;:!\"'()"
# A month or a weekday is written with a capital but names no entity worth a search.
_CALENDAR = set(
    """january february march april may june july august september october november december monday
    tuesday wednesday thursday friday saturday sunday""".split()
)


def _calendar(name: str) -> bool:
    return all(w.lower() in _CALENDAR or w.lower() in _CONNECTORS for w in name.split())


def relation_words(question: str) -> str:
    """The question without its names and function words: what it asks of the entity it hides."""
    named = {w.strip(_PUNCT).lower() for name in name_runs(question) for w in name.split()}
    words = (w.strip(_PUNCT) for w in question.split())
    return " ".join(w for w in words if w and w.lower() not in _FUNCTION_WORDS and w.lower() not in named)


def bridge_queries(
    question: str, evidence: list[dict[str, Any]], retrieved: list[dict[str, Any]], limit: int = 4
) -> list[str]:
    """One query per name the kept evidence gives and the question does not (full names first, then the
    latest hop first), each with the question's relation words; a name whose own passage (by exact title)
    was already retrieved is skipped, since a found passage is excluded from later searches and searching
    it again brings strangers."""
    if not evidence:
        return []
    latest = max(e.get("hop", 0) for e in evidence)
    ordered = [e["text"] for e in evidence if e.get("hop", 0) == latest]
    ordered += [e["text"] for e in evidence if e.get("hop", 0) != latest]
    found = {normalize_answer(p["title"]) for p in retrieved}
    names = [
        n
        for n in mentions(ordered, question, limit=limit + len(found) + 4)
        if normalize_answer(n) not in found and not _calendar(n)
    ]
    relation = relation_words(question)
    return [f"{name} {relation}".strip() for name in names[:limit]]

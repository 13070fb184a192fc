"""Self-supervised reader windows from paragraph text: cloze questions whose answers are names and dates.

The reader's answers fail mostly at span boundaries (on hotpotqa dev with the gold evidence, top-1 EM is
about 25 where F1 is over 40), and 2,142 labeled questions teach few boundaries. Paragraphs teach more: take
a sentence that holds a name, year or number, turn it into a question by putting a question word where the
span was, and ask the reader to find the span in the paragraph. Where the span recurs in another sentence
(as in Splinter's recurring-span selection), the sentence itself is left out of the context, so the reader
must match the question's words against a different sentence; otherwise the sentence stays in and the
window teaches where a span of that kind begins and ends. A distractor sentence from another paragraph is
mixed in half the time. Only the paragraphs of training questions are used.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from reasonrag.data.types import Passage
from reasonrag.policies.bridges import name_runs
from reasonrag.policies.reader import KINDS, Chunk, make_window, render_context
from reasonrag.training.reader_examples import Example, find_span

_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")


def _spans(sentence: str, title: str) -> list[tuple[str, str]]:
    """(span, question word) candidates of a sentence: names other than the title's, years, numbers."""
    t = title.lower()
    out = [
        (n, "what") for n in name_runs(sentence) if len(n) > 2 and n.lower() not in t and t not in n.lower()
    ]
    out += [(m.group(0), "when") for m in _YEAR.finditer(sentence)]
    years = {m.group(0) for m in _YEAR.finditer(sentence)}
    out += [(m.group(0), "how many") for m in _NUMBER.finditer(sentence) if m.group(0) not in years]
    return out


def cloze_example(
    passage: Passage, distractor: Passage | None, tokenizer, max_length: int, rng: random.Random
) -> Example | None:
    """One cloze window from `passage` (None when no sentence holds a usable span)."""
    sentences = list(passage.sentences)
    choices = [(i, span, wh) for i, s in enumerate(sentences) for span, wh in _spans(s, passage.title)]
    if len(sentences) < 2 or not choices:
        return None
    recurring = [
        (i, span, wh) for i, span, wh in choices if any(span in s for j, s in enumerate(sentences) if j != i)
    ]
    i, span, wh = rng.choice(recurring) if recurring and rng.random() < 0.7 else rng.choice(choices)
    question = sentences[i].replace(span, wh, 1)
    if len(question.split()) > max_length // 6:  # a question must leave the context room in the window
        return None
    kept = [s for j, s in enumerate(sentences) if j != i] if (i, span, wh) in recurring else sentences
    chunks = [Chunk(passage.title, tuple(kept), passage.id)]
    labels = [[1.0 if span in s else 0.0 for s in kept]]
    if distractor is not None and distractor.sentences and rng.random() < 0.5:
        chunks.append(Chunk(distractor.title, (rng.choice(distractor.sentences),), distractor.id))
        labels.append([0.0])
        if rng.random() < 0.5:
            chunks.reverse()
            labels.reverse()
    window = make_window(tokenizer, question, chunks, max_length)
    _, ranges = render_context(chunks)
    support = [(a, b) for c, s, a, b in ranges if labels[c][s] == 1.0]
    found = find_span(window, [span], support)
    if found is None or window.context[window.offsets[found[0]][0] : window.offsets[found[1]][1]] != span:
        return None  # cut off, or found only inside a longer word ("9" in "2009")
    return Example(window, [labels[c][s] for c, s in window.sentences], KINDS.index("span"), *found)


def cloze_examples(
    passages: Sequence[Passage], n: int, tokenizer, max_length: int, rng: random.Random
) -> list[Example]:
    """`n` cloze windows from randomly drawn `passages` (fewer if the passages run out of spans)."""
    out: list[Example] = []
    tries = 0
    while len(out) < n and tries < 3 * n:
        tries += 1
        passage, distractor = rng.choice(passages), rng.choice(passages)
        example = cloze_example(passage, distractor, tokenizer, max_length, rng)
        if example is not None:
            out.append(example)
    return out

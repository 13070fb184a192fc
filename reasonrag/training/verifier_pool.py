"""Closed pools for the verifier: labeled steps from each training question's own paragraphs.

The real policy runs over a question's own context paragraphs (the ten of HotpotQA's distractor setting),
and evidence sets drawn from them (gold supporting sentences, and sentences of the same passages that
support nothing) are labeled by the question's gold: an extract step is right when it kept a gold
supporting sentence, an answer when it matches a gold answer. Each evidence set gives one label per
candidate answer, so the synthesize head learns to tell a right answer from the wrong ones read off the
same evidence. They complement the agent's own paths (`verifier_paths`), which are what the verifier is
chosen on.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasonrag.data.corpus import Corpus
from reasonrag.data.types import Passage, Question
from reasonrag.prm.evaluation import gold_step_labels


def extra_questions(path: str | Path, limit: int | None = None) -> list[tuple[Question, list[Passage]]]:
    """Questions with their own paragraphs from a file in HotpotQA's official schema."""
    out = []
    for rec in json.loads(Path(path).read_text())[:limit]:
        passages = [
            Passage(t, t, "".join(sents).strip(), tuple(s.strip() for s in sents))
            for t, sents in rec["context"]
        ]
        meta = {
            "gold_passages": sorted({t for t, _ in rec["supporting_facts"]}),
            "supporting_facts": [[t, int(i)] for t, i in rec["supporting_facts"]],
            "type": rec.get("type"),
        }
        out.append((Question(rec["_id"], rec["question"], [rec["answer"]], "train", meta), passages))
    return out


def corpus_questions(name: str, split: str, limit: int | None) -> list[tuple[Question, list[Passage]]]:
    corpus = Corpus.load(name)
    out = []
    for q in corpus.questions(split)[:limit]:
        ids = q.metadata.get("context_passages") or q.metadata.get("gold_passages") or []
        passages = [corpus.by_id(pid) for pid in ids if pid in corpus]
        if passages:
            out.append((q, passages))
    return out


def _sentence(p: Passage, i: int, score: float) -> dict:
    return {"passage_id": p.id, "title": p.title, "sentence_index": i, "text": p.sentences[i], "score": score}


def _extract_step(kept: list[dict]) -> dict:
    return {
        "stage": "extract",
        "hop": 0,
        "action": " | ".join(k["text"] for k in kept),
        "prob": 1.0,
        "observation": kept,
    }


def _retrieve_step(query: str, hits: list[Any]) -> dict:
    obs = [
        {
            "id": h.passage.id,
            "title": h.passage.title,
            "score": round(float(h.score), 4),
            "text": " ".join(h.passage.sentences[:2])[:200],
        }
        for h in hits
    ]
    return {"stage": "retrieve", "hop": 0, "action": query, "prob": 1.0, "observation": obs}


def continue_examples(question: Question, extract_examples: list[dict]) -> list[dict]:
    """ "Answer now or hop again" as a labeled step: after each evidence set, another hop is right exactly
    when the evidence still lacks a gold supporting fact (the evidence does not suffice yet)."""
    facts = {(pid, int(i)) for pid, i in question.metadata.get("supporting_facts") or []}
    out = []
    for e in extract_examples:
        kept = {
            (o["passage_id"], int(o["sentence_index"]))
            for s in e["steps"]
            if s["stage"] == "extract"
            for o in s["observation"]
        }
        step = {
            "stage": "synthesize",
            "hop": 0,
            "action": "(another hop)",
            "prob": 1.0,
            "observation": "another hop",
        }
        out.append(
            {
                "question": question.question,
                "steps": e["steps"] + [step],
                "label": int(not facts <= kept),
                "stage": "synthesize",
                "kind": "continue",
            }
        )
    return out


def explore(
    question: Question,
    passages: Sequence[Passage],
    policy: Any,
    config: Any,
    search: Any = None,
) -> list[dict]:
    """Labeled steps of one question: `{"question", "steps", "label", "stage"}` each.

    Evidence sets are drawn from the question's own paragraphs (gold supporting sentences, and
    sentences of the same passages that support nothing), and the policy proposes its answers to each,
    as it would at an answer step: one label per candidate answer. With `search` (the corpus retriever),
    the question and question-plus-evidence queries the policy makes are run and labeled too.
    """
    rng = random.Random(f"{config.seed}|{question.id}")
    by_id = {p.id: p for p in passages}
    facts = sorted(
        {
            (pid, int(i))
            for pid, i in question.metadata.get("supporting_facts") or []
            if pid in by_id and int(i) < len(by_id[pid].sentences)
        }
    )
    gold = [_sentence(by_id[pid], i, 0.9) for pid, i in facts]
    others = [
        _sentence(p, i, 0.3)
        for p in passages
        for i in range(min(len(p.sentences), 3))
        if (p.id, i) not in set(facts)
    ]
    rng.shuffle(others)
    if not gold:
        return []
    out: list[dict] = []

    def add(steps: list[dict], stage: str, label: int) -> None:
        out.append({"question": question.question, "steps": steps, "label": int(label), "stage": stage})

    first = gold[0]["passage_id"]
    one_passage = [g for g in gold if g["passage_id"] == first]
    evidence_sets = [gold, one_passage + others[:1], others[1:3], others[3:4] + gold[-1:]]
    labels = gold_step_labels
    for kept in evidence_sets:
        if not kept:
            continue
        step = _extract_step(kept)
        add([step], "extract", labels([step], question)[0])
    for kept in evidence_sets[:3]:
        if not kept:
            continue
        path = [_extract_step(kept)]
        state = {
            "question": question.question,
            "hop": config.max_hops - 1,
            "max_hops": config.max_hops,
            "evidence": [dict(k, hop=0) for k in kept],
            "retrieved": [],
        }
        answers = [c for c in policy.propose("synthesize", state) if c.action.get("type") != "continue"][
            : config.answers
        ]
        for c in answers:
            obs = c.action.get("answer") if c.action.get("type") == "answer" else "not enough evidence"
            step = {
                "stage": "synthesize",
                "hop": 0,
                "action": c.text,
                "prob": round(c.prob, 6),
                "observation": obs or "not enough evidence",
            }
            add(path + [step], "synthesize", labels([step], question)[0])
    out.extend(continue_examples(question, [e for e in out if e["stage"] == "extract"]))
    if search is not None:
        hits = search.search(question.question, k=config.k)
        step = _retrieve_step(question.question, hits)
        add([step], "retrieve", labels([step], question)[0])
        seen = {h.passage.id for h in hits}
        for kept in (one_passage, others[:1]):
            if kept:
                query = f"{question.question} {kept[0]['text']}"
                later = _retrieve_step(query, search.search(query, k=config.k, exclude=seen))
                add([_extract_step(kept), dict(later, hop=1)], "retrieve", labels([later], question)[0])
    return out


def build_examples(pairs: list[tuple], policy: Any, config: Any, desc: str) -> list[dict]:
    """`pairs` are (question, its passages, the corpus search or None)."""
    from tqdm import tqdm

    out: list[dict] = []
    for q, passages, search in tqdm(pairs, desc=desc, unit="q", file=sys.stderr):
        out.extend(explore(q, passages, policy, config, search))
    return out

"""Labeled steps from the agent's own paths over the whole corpus: the states the verifier will judge.

A verifier trained only on states built from a question's own ten paragraphs meets other states at
inference: the agent searches the whole corpus, later hops read what earlier hops found, and the evidence
is what the policy kept. So the agent walks each training question with its real nodes over the real
index, and at every state it reaches the policy's best candidates are all executed (`AgentSteps.expand`)
and labeled exactly by the question's gold (`gold_step_labels`): a search is right when it brought in a
gold paragraph, a kept set when it holds a supporting sentence, an answer when it matches a gold answer.
"Another hop" is right exactly when the kept evidence still lacks a supporting fact.

The walk follows the policy's top candidate or, with probability `explore`, another of the executed ones
(seeded per question), and always hops on while hops remain, so answers are labeled at every hop and later
hops' states are reached. Examples are written one question per line to a JSONL file as they are made, so a
killed build resumes where it stopped.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reasonrag.agent.state import apply_update, next_node
from reasonrag.data.types import Question
from reasonrag.prm.evaluation import gold_step_labels

_KEEP = ("stage", "hop", "action", "prob", "observation")


def slim(step: dict) -> dict:
    """The fields of a step the verifier reads (the rest of the trace stays out of the training file)."""
    return {k: step[k] for k in _KEEP if k in step}


def _facts(question: Question) -> set[tuple[str, int]]:
    return {(str(pid), int(i)) for pid, i in (question.metadata or {}).get("supporting_facts") or []}


def continue_label(question: Question, evidence: Iterable[dict]) -> int | None:
    """Another hop is right while the kept evidence lacks a gold supporting fact; None without facts."""
    facts = _facts(question)
    if not facts:
        return None
    kept = {(str(e["passage_id"]), int(e["sentence_index"])) for e in evidence}
    return int(not facts <= kept)


def explore_paths(
    question: Question,
    steps: Any,
    *,
    expand: int = 4,
    answers: int = 6,
    max_hops: int = 3,
    k: int = 5,
    explore: float = 0.5,
    seed: int = 0,
) -> list[dict]:
    """Labeled candidate steps along one walk of the agent: `{"question", "steps", "label", "stage", "hop"}`.

    `steps` is the agent's `AgentSteps` (its search and policy); nothing is scored.
    """
    rng = random.Random(f"{seed}|paths|{question.id}")
    state = apply_update({}, steps.start({"question": question.question, "max_hops": max_hops, "k": k}))
    path: list[dict] = []
    out: list[dict] = []
    while (node := next_node(state)) is not None:
        cands = steps.propose(state, node)
        n = answers + 1 if node == "synthesize" else expand
        options = steps.expand(state, node, n, cands)
        labels = gold_step_labels([o["step"] for o in options], question)
        follow = None
        for j, (option, label) in enumerate(zip(options, labels)):
            step = slim(option["step"])
            kind = "step"
            if node == "synthesize" and option["update"].get("status") == "running":
                label, kind, follow = continue_label(question, state["evidence"]), "continue", j
            if label is not None:
                out.append(
                    {
                        "question": question.question,
                        "question_id": question.id,
                        "steps": path + [step],
                        "label": int(label),
                        "stage": node,
                        "hop": state["hop"],
                        "kind": kind,
                    }
                )
        if node == "synthesize":
            if follow is None:  # the last hop: its answers are labeled, the walk ends
                break
            j = follow
        else:
            j = 0 if len(options) == 1 or rng.random() >= explore else rng.randrange(len(options))
        chosen = options[j]
        state = apply_update(state, {**chosen["update"], "steps": [chosen["step"]]})
        path.append(slim(chosen["step"]))
    return out


def done_ids(path: Path) -> set[str]:
    """Question ids already written to a path-examples file (a torn last line is dropped and redone)."""
    if not path.is_file():
        return set()
    ids, good = set(), 0
    with path.open("rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                break
            if not raw.endswith(b"\n"):
                break
            ids.add(rec["question_id"])
            good += len(raw)
    if good < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good)
    return ids


def build_path_examples(
    questions: Sequence[Question], steps: Any, out: str | Path, desc: str, **walk: Any
) -> list[dict]:
    """Walk every question (resuming a killed build from `out`) and return all its labeled examples."""
    from tqdm import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    have = done_ids(out)
    todo = [q for q in questions if q.id not in have]
    with out.open("a", encoding="utf-8") as f:
        for q in tqdm(todo, desc=desc, unit="q", file=sys.stderr, initial=len(questions) - len(todo)):
            rec = {"question_id": q.id, "examples": explore_paths(q, steps, **walk)}
            f.write(json.dumps(rec) + "\n")
            f.flush()
    wanted = {q.id for q in questions}
    examples: list[dict] = []
    with out.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["question_id"] in wanted:
                examples.extend(rec["examples"])
    return examples


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m reasonrag.training.verifier_paths",
        description="Label the candidate steps along the agent's own paths over whole corpora (resumable).",
    )
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, default=None, help="questions per corpus")
    ap.add_argument("--out", required=True, help="JSONL file, one question's examples a line")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from reasonrag.agent.graph import agent_steps
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.embedded import EmbeddedPolicy

    policy = EmbeddedPolicy()
    total = 0
    for name in args.corpora:
        corpus = Corpus.load(name)
        steps = agent_steps(corpus, policy=policy)
        qs = corpus.questions(args.split)[: args.limit]
        total += len(build_path_examples(qs, steps, args.out, f"{name} {args.split}", seed=args.seed))
    print(json.dumps({"out": args.out, "examples": total}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

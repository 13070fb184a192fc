"""How often a later hop's candidate queries can find what is missing, and how often the choice does.

    python benchmarks/query_candidates.py --limit 200 \
        --variant today --variant bridges query_bridges=0.3 \
        --out benchmarks/results/query_candidates_dev.json

The agent walks each dev question greedily over the whole corpus (its real nodes and index). At every
retrieve and extract state it reaches, every candidate the policy proposes is executed and labeled exactly
from the gold (`gold_step_labels`: a search is right when it brings in a gold paragraph not found before, a
kept set when it holds a supporting sentence). Per stage and hop:

- `states`: states reached; for retrieve, `missing`: those where a gold paragraph is still unfound, and
  `ceiling`: percent of those with at least one right candidate (what any chooser, policy or PRM, can
  reach at most); for extract, `ceiling` is over all states;
- `policy_top1`: of the states with a right candidate, percent where the policy's own pick is right.

Each `--variant NAME [KEY=VALUE ...]` is a policy configuration (`--policy-option` keys), walked on the
same questions. Heavy: run it through `../shared/bin/heavy`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _unfound(e: dict, gold: set[str]) -> bool:
    found = {o.get("id") for s in e["steps"][:-1] if s["stage"] == "retrieve" for o in s["observation"] or []}
    return bool(gold - found)


def state_table(examples: list[dict], gold: dict[str, set[str]]) -> dict[str, dict]:
    """Per "stage hop N": states, ceiling and the policy's top-1 from one greedy walk's labeled siblings
    (`gold`: each question id's gold paragraph ids)."""
    from reasonrag.training.verifier_ranking import state_key

    states: dict[tuple, list[int]] = {}
    missing: dict[tuple, bool] = {}
    for e in examples:
        if e.get("kind") == "continue" or e["stage"] == "synthesize":
            continue
        key = (*state_key(e), e["hop"])
        states.setdefault(key, []).append(e["label"])  # in the policy's order: its pick first
        missing[key] = e["stage"] != "retrieve" or _unfound(e, gold[e["question_id"]])
    table: dict[str, dict] = {}
    for key, labels in states.items():
        stage, hop = key[1], key[3]
        row = table.setdefault(
            f"{stage} hop {hop}", {"states": 0, "missing": 0, "right_somewhere": 0, "policy_right": 0}
        )
        row["states"] += 1
        row["missing"] += int(missing[key])
        row["right_somewhere"] += int(any(labels))
        row["policy_right"] += int(any(labels) and labels[0] == 1)
    for stage_hop, row in table.items():
        if not stage_hop.startswith("retrieve"):
            del row["missing"]
        row["ceiling"] = round(100 * row["right_somewhere"] / max(row.get("missing", row["states"]), 1), 1)
        row["policy_top1"] = round(100 * row["policy_right"] / max(row["right_somewhere"], 1), 1)
    return dict(sorted(table.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=200, help="questions per corpus (the first N)")
    ap.add_argument("--max-hops", type=int, default=3)
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar="NAME [KEY=VALUE]",
        help="a policy setting (repeatable)",
    )
    ap.add_argument("--out", default=None, help="write the table here (JSON, replaced)")
    args = ap.parse_args(argv)
    variants = args.variant or [["today"]]
    from tqdm import tqdm

    from reasonrag.agent.graph import agent_steps
    from reasonrag.cli.options import policy_config
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.reader import Reader
    from reasonrag.training.verifier_paths import explore_paths

    configs = {v[0]: policy_config(v[1:]) for v in variants}  # bad options fail before any walk
    reader = Reader()
    result: dict = {"command": "python benchmarks/query_candidates.py " + " ".join(argv or sys.argv[1:])}
    for name in args.corpora:
        corpus = Corpus.load(name)
        questions = corpus.questions(args.split)[: args.limit]
        for variant, config in configs.items():
            steps = agent_steps(corpus, policy=EmbeddedPolicy(reader, config), max_hops=args.max_hops)
            t0 = time.perf_counter()
            examples = []
            for q in tqdm(questions, desc=f"{name} {variant}", unit="q", file=sys.stderr):
                examples += explore_paths(q, steps, expand=64, answers=0, explore=0.0, max_hops=args.max_hops)
            table = state_table(
                examples, {q.id: set(q.metadata.get("gold_passages") or []) for q in questions}
            )
            table["seconds_per_question"] = round((time.perf_counter() - t0) / len(questions), 2)
            result.setdefault(name, {})[variant] = table
            print(json.dumps({name: {variant: table}}), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

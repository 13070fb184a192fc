"""Inference-time search settings side by side, with one set of models: greedy, critic, beam, stopping,
backtracking, best-of-N; choose on `dev`, then run `test` once with the choice.

    python benchmarks/search_dev.py --split dev --limit 100 --prm reasonrag/weights/verifier \
        --setting greedy: --setting critic4:critic=4 --setting stop:stop_threshold=0.5,policy.min_hops=1 \
        --out benchmarks/results/search_dev.json --predictions-dir runs/search_dev

A setting is NAME:KEY=VALUE,... with KEY one of critic, critic_stages (a '+'-joined list), beam, best_of,
select, stop_threshold, backtrack (the threshold; off when absent), max_hops, k, lexical (BM25's share of
the retrieval score; default: the retriever's), or policy.FIELD for an
EmbeddedPolicyConfig field. Every setting runs over the same questions of every corpus; with
--predictions-dir each run appends its records as it goes and a rerun resumes (the summary is computed
from the file). Reported per setting and corpus: EM, F1, recalls, hops, seconds, nodes and PRM calls per
question, and the PRM's AUROC per stage against gold on the agent's own paths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEYS = ("n", "em", "f1", "retrieval_recall", "evidence_recall", "mean_hops", "seconds_per_question")
MORE = ("nodes_per_question", "prm_calls_per_question", "backtrack_rate", "prm_auroc", "sibling_top1")


def parse_setting(text: str) -> tuple[str, dict, list[str]]:
    name, _, body = text.partition(":")
    agent: dict = {}
    policy: list[str] = []
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, _, value = item.partition("=")
        if key.startswith("policy."):
            policy.append(f"{key[7:]}={value}")
        elif key == "critic_stages":
            agent[key] = tuple(value.split("+"))
        elif key in ("critic", "beam", "best_of", "max_hops", "k"):
            agent[key] = int(value)
        elif key in ("stop_threshold", "backtrack", "lexical"):
            agent[key] = float(value)
        elif key == "select":
            agent[key] = value
        else:
            raise SystemExit(f"unknown key {key!r} in setting {text!r}")
    return name, agent, policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=None, help="questions per corpus")
    ap.add_argument("--prm", default=None, help="PRM directory (default: the shipped one)")
    ap.add_argument("--reader", default=None, help="reader directory (default: the shipped one)")
    ap.add_argument("--setting", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument("--out", default=None, help="write the rows here (JSON, replaced)")
    ap.add_argument("--predictions-dir", default=None, help="a resumable predictions file per run here")
    args = ap.parse_args(argv)

    from reasonrag.agent.graph import build_agent
    from reasonrag.agent.nodes import BacktrackConfig
    from reasonrag.cli.options import policy_config, quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.evaluation.evaluate import evaluate
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.reader import Reader
    from reasonrag.prm.loading import load_prm
    from reasonrag.retrieval.retriever import DEFAULT_LEXICAL_WEIGHT, DenseRetriever

    quiet_libraries()
    reader = Reader(args.reader)
    prm = load_prm(args.prm)
    corpora = [Corpus.load(name) for name in args.corpora]
    retrievers = {c.name: DenseRetriever(c, show_progress=False) for c in corpora}
    rows = []
    for text in args.setting:
        name, agent, policy_options = parse_setting(text)
        policy = EmbeddedPolicy(reader, policy_config(policy_options))
        max_hops, k = agent.pop("max_hops", 3), agent.pop("k", 5)
        threshold = agent.pop("backtrack", None)
        lexical = agent.pop("lexical", DEFAULT_LEXICAL_WEIGHT)
        backtrack = BacktrackConfig(threshold=threshold) if threshold is not None else None
        sample = agent.get("best_of", 1) > 1
        row: dict = {"setting": name, "spec": text, "load_at_start": round(os.getloadavg()[0], 2)}
        for corpus in corpora:
            questions = corpus.questions(args.split)[: args.limit]
            retrievers[corpus.name].lexical_weight = lexical
            graph = build_agent(
                retriever=retrievers[corpus.name],
                policy=policy,
                prm=prm,
                max_hops=max_hops,
                k=k,
                backtrack=backtrack,
                **agent,
            )
            predictions = None
            if args.predictions_dir:
                predictions = Path(args.predictions_dir) / f"{name}_{corpus.name}_{args.split}.jsonl"
                predictions.parent.mkdir(parents=True, exist_ok=True)
            summary = evaluate(
                graph,
                questions,
                max_hops=max_hops,
                progress=True,
                inputs={"k": k, "mode": "sample" if sample else "greedy"},
                predictions=predictions,
                setting={"spec": text, "prm": args.prm, "reader": args.reader, "corpus": corpus.name},
            )
            row[corpus.name] = {key: summary.get(key) for key in KEYS + MORE if key in summary}
            print(name, corpus.name, json.dumps(row[corpus.name]), file=sys.stderr, flush=True)
        row["mean_em"] = round(sum(row[c.name]["em"] for c in corpora) / len(corpora), 2)
        rows.append(row)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(args.out).with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"split": args.split, "limit": args.limit, "rows": rows}, indent=2) + "\n"
            )
            os.replace(tmp, args.out)
    for row in rows:
        print(
            f"{row['setting']:>20}  mean EM {row['mean_em']:6.2f}  "
            + "  ".join(
                f"{c.name} {row[c.name]['em']:.1f}/{row[c.name]['f1']:.1f} {row[c.name]['seconds_per_question']:.2f}s"
                for c in corpora
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

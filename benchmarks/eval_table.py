"""The foundation results table: the multi-hop agent next to a one-shot baseline with the same models.

    python benchmarks/eval_table.py --split test --out benchmarks/results/eval_test.json

One-shot = the same graph with one hop: retrieve once with the question, extract once, read once.
Prints a markdown table and writes every summary as JSON (the numbers in the README come from it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa", "musique"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-hops", type=int, default=3, help="hops of the multi-hop agent")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="write the summaries here (JSON)")
    ap.add_argument("--predictions-dir", default=None, help="write per-question predictions here")
    args = ap.parse_args(argv)

    from reasonrag.agent.graph import build_agent
    from reasonrag.cli.options import policy_config, quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.evaluation.evaluate import evaluate
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.retrieval.retriever import DenseRetriever

    quiet_libraries()
    policy = EmbeddedPolicy(config=policy_config(args.policy_option))
    rows = []
    for name in args.corpora:
        corpus = Corpus.load(name)
        if args.split not in corpus.splits():
            print(f"{name} has no {args.split!r} split; skipped", file=sys.stderr)
            continue
        questions = corpus.questions(args.split)
        if args.limit:
            questions = questions[: args.limit]
        retriever = DenseRetriever(corpus)
        for label, hops in (("one-shot", 1), ("multi-hop", args.max_hops)):
            graph = build_agent(retriever=retriever, policy=policy, max_hops=hops, k=args.k)
            preds = None
            if args.predictions_dir:
                preds = Path(args.predictions_dir) / f"{name}-{args.split}-{label}.jsonl"
            t0 = time.perf_counter()
            summary = evaluate(graph, questions, max_hops=hops, predictions=preds, inputs={"k": args.k})
            summary.update(
                corpus=name,
                split=args.split,
                agent=label,
                max_hops=hops,
                k=args.k,
                wall_s=round(time.perf_counter() - t0, 1),
            )
            rows.append(summary)
            print(json.dumps(summary), file=sys.stderr)
    header = "| corpus | agent | n | EM | F1 | cover-EM | retrieval recall | evidence recall | hops | p50 s | p95 s |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for r in rows:
        ev = "-" if r["evidence_recall"] is None else r["evidence_recall"]
        print(
            f"| {r['corpus']} | {r['agent']} | {r['n']} | {r['em']} | {r['f1']} | {r['cover_em']} | "
            f"{r['retrieval_recall']} | {ev} | {r['mean_hops']} | {r['latency_p50_s']} | {r['latency_p95_s']} |"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"split": args.split, "cpu_count": os.cpu_count(), "rows": rows}, indent=2) + "\n"
        )
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

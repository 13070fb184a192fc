"""Choose the embedded policy's knobs on `dev` (never on `test`).

    python scripts/tune_dev.py --limit 100 --out benchmarks/results/tune_dev.json \
        --config base: --config lowkeep:keep_threshold=0.3,max_keep=4 --config hops2:@max_hops=2

A config is NAME:KEY=VALUE,...; keys are EmbeddedPolicyConfig fields, or @max_hops / @k for the agent.
Models load once; every config runs over the same dev questions of every corpus given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_config(text: str) -> tuple[str, list[str], dict[str, int]]:
    name, _, body = text.partition(":")
    policy, agent = [], {}
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, _, value = item.partition("=")
        if key.startswith("@"):
            agent[key[1:]] = int(value)
        else:
            policy.append(item)
    return name, policy, agent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--limit", type=int, default=None, help="dev questions per corpus")
    ap.add_argument("--config", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument("--reader", default=None, help="reader directory (default: the shipped one)")
    ap.add_argument("--out", default=None, help="append results to this JSON file")
    args = ap.parse_args(argv)

    from reasonrag.agent.graph import build_agent
    from reasonrag.cli.options import policy_config, quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.evaluation.evaluate import evaluate
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.reader import Reader
    from reasonrag.retrieval.retriever import DenseRetriever

    quiet_libraries()
    reader = Reader(args.reader)
    corpora = [Corpus.load(name) for name in args.corpora]
    retrievers = {c.name: DenseRetriever(c, show_progress=False) for c in corpora}
    results = []
    for text in args.config:
        name, policy_options, agent_options = parse_config(text)
        policy = EmbeddedPolicy(reader, policy_config(policy_options))
        max_hops, k = agent_options.get("max_hops", 3), agent_options.get("k", 5)
        row = {"config": name, "policy": policy_options, "max_hops": max_hops, "k": k}
        for corpus in corpora:
            questions = corpus.questions("dev")[: args.limit]
            graph = build_agent(retriever=retrievers[corpus.name], policy=policy, max_hops=max_hops, k=k)
            s = evaluate(graph, questions, max_hops=max_hops, progress=False, inputs={"k": k})
            row[corpus.name] = {
                key: s[key]
                for key in (
                    "n",
                    "em",
                    "f1",
                    "retrieval_recall",
                    "evidence_recall",
                    "mean_hops",
                    "latency_p50_s",
                )
            }
        row["mean_em"] = round(sum(row[c.name]["em"] for c in corpora) / len(corpora), 2)
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        path = Path(args.out)
        old = json.loads(path.read_text()) if path.exists() else []
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(old + results, indent=2) + "\n")
        os.replace(tmp, path)
    best = max(results, key=lambda r: r["mean_em"])
    print(f"best on dev: {best['config']} (mean EM {best['mean_em']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

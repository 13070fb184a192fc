"""Process rewards at inference: backtracking threshold on dev, then greedy vs backtracking vs best-of-N.

    python benchmarks/inference_search.py tune --split dev --limit 100 --out benchmarks/results/backtrack_dev.json
    python benchmarks/inference_search.py compare --split test --limit 100 --threshold T \\
        --out benchmarks/results/inference_test.json --plot benchmarks/results/prm_at_n.png

`tune` runs the backtracking agent at several thresholds on dev and reports EM, how often it backtracked
and the flips against greedy. `compare` runs, per corpus and question: the greedy agent, the backtracking
agent, and one pool of 16 sampled trajectories (the shipped best-of-N graph); PRM@N for N in 1, 2, 4, 8,
16 takes the first N of the pool and keeps one by each selection rule. Costs are node executions and
seconds per question. All agents share one policy, so readings computed once are reused (as in the product).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from reasonrag.data.types import STAGES

NS = (1, 2, 4, 8, 16)


def _setup(args):
    from reasonrag.cli.options import quiet_libraries
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.prm.loading import load_prm

    quiet_libraries()
    return EmbeddedPolicy(), load_prm(args.prm)


def _run(graph, questions, max_hops, label, mode="greedy", seed=0):
    from tqdm import tqdm

    from reasonrag.agent.graph import run_agent
    from reasonrag.evaluation.evaluate import summarise, trajectory_record

    records = []
    for q in tqdm(questions, desc=label, unit="q", file=sys.stderr):
        t0 = time.perf_counter()
        state = run_agent(graph, q.question, max_hops=max_hops, mode=mode, seed=seed)
        records.append(trajectory_record(q, state, time.perf_counter() - t0))
    return records, summarise(records)


def _flips(base, other):
    wrong_to_right = sum(1 for a, b in zip(base, other) if a["em"] < 1 and b["em"] >= 1)
    right_to_wrong = sum(1 for a, b in zip(base, other) if a["em"] >= 1 and b["em"] < 1)
    return {"wrong_to_right": wrong_to_right, "right_to_wrong": right_to_wrong}


def tune(args) -> dict:
    from reasonrag.agent.graph import build_agent
    from reasonrag.agent.nodes import BacktrackConfig
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.retriever import DenseRetriever

    policy, prm = _setup(args)
    out = {"split": args.split, "limit": args.limit, "max_backtracks": args.max_backtracks, "corpora": {}}
    for name in args.corpora:
        corpus = Corpus.load(name)
        questions = corpus.questions(args.split)[: args.limit]
        retriever = DenseRetriever(corpus)
        kw = dict(retriever=retriever, policy=policy, max_hops=args.max_hops, k=args.k, prm=prm)
        greedy, g_sum = _run(build_agent(**kw), questions, args.max_hops, f"{name} greedy")
        rows = {"greedy": g_sum}
        for t in args.thresholds:
            cfg = BacktrackConfig(threshold=t, max_backtracks=args.max_backtracks, stages=args.stages)
            recs, summ = _run(build_agent(**kw, backtrack=cfg), questions, args.max_hops, f"{name} t={t}")
            summ.update(_flips(greedy, recs), threshold=t)
            rows[f"backtrack@{t}"] = summ
        out["corpora"][name] = rows
    means = {}
    for key in next(iter(out["corpora"].values())):
        means[key] = round(sum(c[key]["em"] for c in out["corpora"].values()) / len(out["corpora"]), 2)
    out["mean_em"] = means
    return out


def compare(args) -> dict:
    from tqdm import tqdm

    from reasonrag.agent.best_of_n import SELECTORS, select_sample
    from reasonrag.agent.graph import build_agent
    from reasonrag.agent.nodes import BacktrackConfig
    from reasonrag.data.corpus import Corpus
    from reasonrag.data.rewards import exact_match, f1_score
    from reasonrag.retrieval.retriever import DenseRetriever

    policy, prm = _setup(args)
    out = {"split": args.split, "limit": args.limit, "threshold": args.threshold, "corpora": {}}
    for name in args.corpora:
        corpus = Corpus.load(name)
        split = args.split if args.split in corpus.splits() else None
        questions = corpus.questions(split)[: args.limit]
        retriever = DenseRetriever(corpus)
        kw = dict(retriever=retriever, policy=policy, max_hops=args.max_hops, k=args.k, prm=prm)
        greedy, g_sum = _run(build_agent(**kw), questions, args.max_hops, f"{name} greedy")
        cfg = BacktrackConfig(
            threshold=args.threshold, max_backtracks=args.max_backtracks, stages=args.stages
        )
        bt, b_sum = _run(build_agent(**kw, backtrack=cfg), questions, args.max_hops, f"{name} backtrack")
        b_sum.update(_flips(greedy, bt))
        pool_graph = build_agent(**kw, best_of=max(NS), select="min")
        pools = []
        for q in tqdm(questions, desc=f"{name} pool of {max(NS)}", unit="q", file=sys.stderr):
            state = pool_graph.invoke({"question": q.question, "max_hops": args.max_hops, "seed": 0})
            pools.append((q, state["samples"]))
        prm_at_n = {}
        for sel in SELECTORS:
            prm_at_n[sel] = {}
            for n in NS:
                em = f1 = nodes = secs = 0.0
                for q, samples in pools:
                    pick = samples[select_sample(samples[:n], sel)]
                    em += exact_match(pick["answer"], q.golden_answers)
                    f1 += f1_score(pick["answer"], q.golden_answers)
                    nodes += sum(s["nodes"] for s in samples[:n])
                    secs += sum(s["seconds"] for s in samples[:n])
                m = len(pools)
                prm_at_n[sel][n] = {
                    "em": round(100 * em / m, 2),
                    "f1": round(100 * f1 / m, 2),
                    "nodes_per_question": round(nodes / m, 1),
                    "seconds_per_question": round(secs / m, 3),
                }
        oracle = {
            n: round(
                100
                * sum(any(exact_match(s["answer"], q.golden_answers) for s in smp[:n]) for q, smp in pools)
                / len(pools),
                2,
            )
            for n in NS
        }
        out["corpora"][name] = {
            "split": split or "all",
            "n": len(questions),
            "greedy": g_sum,
            "backtrack": b_sum,
            "prm_at_n": prm_at_n,
            "oracle_at_n": oracle,
        }
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["corpora"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = result["corpora"][name]
        for sel, by_n in c["prm_at_n"].items():
            ax.plot(
                NS,
                [by_n[str(n)]["em"] if str(n) in by_n else by_n[n]["em"] for n in NS],
                marker="o",
                label=sel,
            )
        ax.axhline(c["greedy"]["em"], color="grey", linestyle="--", label="greedy")
        ax.axhline(c["backtrack"]["em"], color="black", linestyle=":", label="backtracking")
        ax.set_xscale("log", base=2)
        ax.set_xticks(NS, [str(n) for n in NS])
        ax.set_title(f"{name} ({c['split']}, {c['n']} q)")
        ax.set_xlabel("N sampled trajectories")
        ax.set_ylabel("EM")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tune", "compare", "plot"])
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--prm", default=None, help="PRM directory (default: the shipped one)")
    ap.add_argument("--max-hops", type=int, default=3)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    ap.add_argument("--threshold", type=float, default=0.5, help="backtracking threshold for compare")
    ap.add_argument("--max-backtracks", type=int, default=3)
    ap.add_argument(
        "--stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        help="stages a backtrack may revisit (default: all three)",
    )
    ap.add_argument("--out", default=None, help="JSON result file (for plot: the input)")
    ap.add_argument("--plot", default=None, help="PNG path for the PRM@N plot (compare, plot)")
    args = ap.parse_args(argv)
    if args.what == "plot":
        plot(json.loads(Path(args.out).read_text()), args.plot)
        return 0
    result = tune(args) if args.what == "tune" else compare(args)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.plot and args.what == "compare":
        plot(json.loads(text), args.plot)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

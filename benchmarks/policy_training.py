"""Our Table 3: training the search policy from outcome, process and combined rewards, and DPO.

    python benchmarks/policy_training.py train --labels runs/labels/{hotpotqa,2wikimultihopqa}.train.jsonl \\
        --dev-labels runs/labels/{hotpotqa,2wikimultihopqa}.dev.jsonl --runs runs/policy --hidden 0 \\
        --no-embeddings --out benchmarks/results/policy_training.json \\
        --plot benchmarks/results/policy_reward_curves.png
    python benchmarks/policy_training.py evaluate --runs runs/policy --corpus hotpotqa --split test \\
        --limit 150 --mode greedy --variants pg-alpha1 pg-alpha0 pg-alpha0.7 dpo \\
        --out benchmarks/results/policy_eval_hotpotqa_test_greedy.json
    python benchmarks/policy_training.py changes --runs runs/policy --dev-labels runs/labels/*.dev.jsonl \\
        --variants pg-alpha1 dpo --out benchmarks/results/policy_greedy_changes_dev.json
    python benchmarks/policy_training.py report --results benchmarks/results/policy_eval_*.json \\
        --plot benchmarks/results/policy_comparison.png

`train` trains every variant from the same explored trajectories (same questions, same exploration budget):
policy gradient with alpha = 1 (outcome only), 0 (process only) and the combined alphas, and DPO on SPRE
sibling pairs; plus outcome-only and combined on the first N questions (data efficiency). Step rewards are
the shipped PRM's scores (`--process-reward prm`, scored once and cached). `evaluate` runs the greedy agent
with each trained head, and untrained, on one split; all variants share one embedded policy, so readings
computed once are reused. `report` prints the tables and draws the plots.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

ALPHAS = (1.0, 0.0, 0.3, 0.5, 0.7)


def _name(algorithm: str, alpha: float | None = None, questions: int | None = None) -> str:
    base = algorithm if algorithm.startswith("dpo") else f"pg-alpha{alpha:g}"
    return base + (f"-q{questions}" if questions else "")


def train(args) -> dict:
    from reasonrag.cli.options import quiet_libraries
    from reasonrag.cli.train_policy import first_questions
    from reasonrag.policies.head import PolicyHead, PolicyHeadConfig, TunedPolicy
    from reasonrag.prm.loading import load_prm
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.policy_training import DPOConfig, PolicyGradientConfig, step_rewards, train_policy

    quiet_libraries()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    records = read_labels(args.labels)
    dev = read_labels(args.dev_labels)
    cache = runs / "prm_rewards.pkl"
    if cache.is_file():
        rewards, dev_rewards = pickle.loads(cache.read_bytes())
    else:
        prm = load_prm(args.prm)
        rewards, dev_rewards = step_rewards(records, "prm", prm), step_rewards(dev, "prm", prm)
        cache.write_bytes(pickle.dumps((rewards, dev_rewards)))
    shared = PolicyHead()
    emb_cache = runs / "embeddings.pt"
    if emb_cache.is_file():
        import torch

        shared._cache.update(torch.load(emb_cache))
    index = {id(r): i for i, r in enumerate(records)}
    head_config = PolicyHeadConfig(
        hidden=args.hidden, dropout=args.dropout, embeddings=not args.no_embeddings
    )
    out = {"labels": [Path(p).name for p in args.labels], "head": asdict(head_config), "variants": {}}

    def jobs():
        yield from [("pg", a, None) for a in args.alphas]
        yield ("dpo", None, None)
        if args.answer_pairs:
            yield ("dpo-answers", None, None)
        combined = args.combined_alpha
        if combined is None:  # alpha chosen on dev: the best estimated success among the mixed alphas
            mixed = {
                n: v for n, v in out["variants"].items() if v["algorithm"] == "pg" and 0 < v["alpha"] < 1
            }
            best = max(mixed.values(), key=lambda v: v["history"][-1].get("dev_success") or 0.0, default=None)
            combined = best["alpha"] if best else 0.5
        out["combined_alpha"] = combined
        yield from [("pg", a, n) for n in args.questions for a in (1.0, combined)]

    if args.only and args.out and Path(args.out).is_file():  # keep what the other variants measured
        out["variants"] = json.loads(Path(args.out).read_text())["variants"]
    for algorithm, alpha, n in jobs():
        name = _name(algorithm, alpha, n)
        if args.only and name not in args.only:
            continue
        subset = first_questions(records, n)
        sub_rewards = [rewards[index[id(r)]] for r in subset]
        head = PolicyHead(shared.encoder, head_config)
        head._cache = shared._cache  # one embedding cache for every variant
        policy = TunedPolicy(None, head)
        if algorithm == "pg":
            config = PolicyGradientConfig(
                alpha=alpha, epochs=args.epochs, lr=args.lr, kl_coef=args.kl, clip=args.clip, seed=args.seed
            )
        else:
            config = DPOConfig(
                epochs=args.dpo_epochs or args.epochs,
                lr=args.dpo_lr or args.lr,
                beta=args.beta,
                margin=args.margin,
                seed=args.seed,
                answer_pairs=algorithm == "dpo-answers",
            )
        t0 = time.perf_counter()
        result = train_policy(
            policy,
            subset,
            config,
            rewards=sub_rewards,
            dev_records=dev,
            dev_rewards=dev_rewards,
            progress=False,
        )
        questions = len({r["question_id"] for r in subset})
        policy.save(
            runs / name,
            {
                "command": "python benchmarks/policy_training.py train (variant " + name + ")",
                "data": {"labels": out["labels"], "questions": questions, "trajectories": len(subset)},
                "training": result.config,
                "history": result.history,
            },
        )
        out["variants"][name] = {
            "algorithm": algorithm,
            "alpha": alpha,
            "questions": questions,
            "examples": result.examples,
            "seconds": round(time.perf_counter() - t0, 1),
            "history": result.history,
        }
        if not emb_cache.is_file():
            import torch

            torch.save(dict(shared._cache), emb_cache)
        last = result.history[-1]
        print(
            f"{name}: {questions} q, {result.examples} examples, {result.seconds}s; "
            f"train reward {result.history[0].get('train_reward')} -> {last.get('train_reward')}, "
            f"dev reward {result.history[0].get('dev_reward')} -> {last.get('dev_reward')}, "
            f"dev success {result.history[0].get('dev_success')} -> {last.get('dev_success')}",
            file=sys.stderr,
            flush=True,
        )
    if args.plot:
        _plot_curves(out, args.plot)
    return out


def _plot_curves(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, v in out["variants"].items():
        if "-q" in name:
            continue
        epochs = [h["epoch"] for h in v["history"]]
        for ax, key in zip(axes, ("train_reward", "dev_reward")):
            ys = [h.get(key) for h in v["history"]]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker="o", label=name)
    for ax, title in zip(axes, ("train questions", "dev questions")):
        ax.set_title(f"estimated reward (each variant's own alpha), {title}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward of the current policy (importance-weighted)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def evaluate(args) -> dict:
    from reasonrag.agent.graph import build_agent
    from reasonrag.cli.options import quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.head import load_policy_head
    from reasonrag.retrieval.retriever import DenseRetriever

    sys.path.insert(0, str(Path(__file__).parent))
    from inference_search import _run

    quiet_libraries()
    corpus = Corpus.load(args.corpus)
    questions = corpus.questions(args.split)[: args.limit]
    retriever = DenseRetriever(corpus)
    base = EmbeddedPolicy()
    runs = Path(args.runs)
    names = args.variants or sorted(p.name for p in runs.iterdir() if (p / "manifest.json").is_file())
    out = {
        "corpus": corpus.name,
        "split": args.split,
        "n": len(questions),
        "mode": args.mode,
        "seed": args.seed,
        "variants": {},
    }
    for name in ["untrained", *names]:
        policy = base if name == "untrained" else load_policy_head(runs / name, base, encoder=None)
        graph = build_agent(retriever=retriever, policy=policy, max_hops=args.max_hops)
        t0 = time.perf_counter()
        records, summary = _run(
            graph, questions, args.max_hops, f"{corpus.name}/{name}", mode=args.mode, seed=args.seed
        )
        summary["seconds_per_question"] = round((time.perf_counter() - t0) / max(len(questions), 1), 3)
        out["variants"][name] = {
            k: summary.get(k)
            for k in (
                "em",
                "f1",
                "cover_em",
                "retrieval_recall",
                "evidence_recall",
                "mean_hops",
                "seconds_per_question",
            )
        }
        print(
            f"{corpus.name} {args.split} {name}: EM {summary['em']} F1 {summary['f1']}",
            file=sys.stderr,
            flush=True,
        )
        if args.out:  # written after every variant: an interrupted run keeps what it measured
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


def changes(args) -> dict:
    """How far each head moved the policy on the dev decisions: greedy choices changed, mean entropy."""
    import torch

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.policies.head import PolicyHead, load_policy_head
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.policy_training import record_decisions

    quiet_libraries()
    dev = read_labels(args.dev_labels)
    distinct = {}
    for r in dev:
        for d in record_decisions(r):
            if d is not None:
                distinct.setdefault((d.question, d.stage, d.hop, tuple(d.context), tuple(d.candidates)), d)
    decisions = list(distinct.values())
    shared = PolicyHead()
    runs = Path(args.runs)
    if (runs / "embeddings.pt").is_file():
        shared._cache.update(torch.load(runs / "embeddings.pt"))
    out: dict = {"dev_decisions": len(decisions), "variants": {}}
    for name in args.variants:
        policy = load_policy_head(runs / name, None, encoder=shared.encoder)
        policy.head._cache = shared._cache
        with torch.no_grad():
            tuned = policy.head.log_probs(decisions)
        changed: dict[str, int] = {}
        before = after = 0.0
        for d, lp in zip(decisions, tuned):
            base = torch.log_softmax(torch.tensor(d.base_logprobs).clamp(min=-30.0), 0)
            if int(lp.argmax()) != int(base.argmax()):
                changed[d.stage] = changed.get(d.stage, 0) + 1
            before += float(-(base.exp() * base).sum())
            after += float(-(lp.exp() * lp).sum())
        n = max(len(decisions), 1)
        out["variants"][name] = {
            "greedy_changes": changed,
            "entropy_before": round(before / n, 3),
            "entropy_after": round(after / n, 3),
        }
        print(name, out["variants"][name], file=sys.stderr, flush=True)
    return out


def report(args) -> dict:
    results = [json.loads(Path(p).read_text()) for p in args.results]
    names = sorted({n for r in results for n in r["variants"]}, key=lambda n: (n != "untrained", n))
    cols = [f"{r['corpus']} {r['split']} {r.get('mode', 'greedy')} ({r['n']})" for r in results]
    print("| policy | " + " | ".join(f"{c} EM / F1" for c in cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for n in names:
        cells = []
        for r in results:
            v = r["variants"].get(n)
            cells.append(f"{v['em']:.1f} / {v['f1']:.1f}" if v else "")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        main_names = [n for n in names if "-q" not in n and all(n in r["variants"] for r in results)]
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(results) * 1.2), 4))
        width = 0.8 / max(len(main_names), 1)
        for i, n in enumerate(main_names):
            ys = [r["variants"].get(n, {}).get("em") or 0 for r in results]
            ax.bar([j + i * width for j in range(len(results))], ys, width, label=n)
        ticks = [f"{r['corpus']}\n{r['split']}, {r.get('mode', 'greedy')} ({r['n']} q)" for r in results]
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))], ticks, fontsize=8)
        ax.set_ylabel("EM")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.efficiency_plot:
        _plot_efficiency(results, args.efficiency_plot, args.train_questions)
    return {"variants": names}


def _efficiency(result: dict, alpha: str, full: int) -> list[tuple[int, float]]:
    """(training questions, EM) of one alpha in one results file: the -qN cuts plus the full run."""
    points = []
    for name, v in result["variants"].items():
        head, _, cut = name.partition("-q")
        if head == f"pg-alpha{alpha}" and v:
            points.append((int(cut) if cut else full, v["em"]))
    return sorted(points)


def _plot_efficiency(results: list[dict], path: str, full: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted(
        {n.split("-q")[0][len("pg-alpha") :] for r in results for n in r["variants"] if "-q" in n}
    )
    with_cuts = [r for r in results if any("-q" in n for n in r["variants"])]
    fig, axes = plt.subplots(1, len(with_cuts), figsize=(5 * len(with_cuts), 4), squeeze=False)
    for ax, r in zip(axes[0], with_cuts):
        for a in alphas:
            pts = _efficiency(r, a, full)
            label = "outcome only (alpha 1)" if a == "1" else f"combined (alpha {a})"
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
        if r["variants"].get("untrained"):
            ax.axhline(r["variants"]["untrained"]["em"], color="gray", ls="--", label="untrained")
        ax.set_title(f"{r['corpus']} {r['split']}, {r.get('mode', 'greedy')} ({r['n']} q)", fontsize=10)
        ems = [y for a in alphas for _, y in _efficiency(r, a, full)]
        if ems:
            ax.set_ylim(min(ems) - 3, max(ems) + 3)
        ax.set_xlabel("training questions")
        ax.set_ylabel("EM")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--dev-labels", nargs="+", required=True)
    p.add_argument("--runs", default="runs/policy", help="where the trained heads go")
    p.add_argument("--prm", default=None)
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    p.add_argument(
        "--combined-alpha",
        type=float,
        default=None,
        help="alpha of the data-efficiency curve (default: the mixed alpha with the best dev success)",
    )
    p.add_argument("--questions", type=int, nargs="*", default=[100, 300], help="data-efficiency cuts")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--kl", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=1.0, help="dpo beta")
    p.add_argument("--dpo-epochs", type=int, default=30)
    p.add_argument("--dpo-lr", type=float, default=3e-2)
    p.add_argument(
        "--answer-pairs", action="store_true", help="also train dpo-answers: DPO with the answer-step pairs"
    )
    p.add_argument(
        "--only", nargs="*", default=None, help="train only these variants (others in --out are kept)"
    )
    p.add_argument("--hidden", type=int, default=0, help="head hidden size (0: linear)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--no-embeddings", action="store_true", help="head on the numeric features only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=None)
    p = sub.add_parser("evaluate")
    p.add_argument("--runs", default="runs/policy")
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--corpus", required=True)
    p.add_argument("--split", default="dev")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--max-hops", type=int, default=3)
    p.add_argument(
        "--mode",
        choices=("greedy", "sample"),
        default="greedy",
        help="greedy: the argmax action; sample: draw from the policy (what training optimises)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --mode sample")
    p.add_argument("--out", default=None)
    p = sub.add_parser("changes")
    p.add_argument("--runs", default="runs/policy")
    p.add_argument("--dev-labels", nargs="+", required=True)
    p.add_argument("--variants", nargs="+", required=True)
    p.add_argument("--out", default=None)
    p = sub.add_parser("report")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--plot", default=None)
    p.add_argument("--efficiency-plot", default=None, help="EM against training questions (the -qN heads)")
    p.add_argument("--train-questions", type=int, default=700, help="questions of the full training run")
    args = ap.parse_args()
    result = {"train": train, "evaluate": evaluate, "changes": changes, "report": report}[args.cmd](args)
    if getattr(args, "out", None) and args.cmd in ("train", "changes"):
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

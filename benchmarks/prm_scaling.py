"""PRM data scaling: per-stage AUROC against the share of labeled training steps used.

    python benchmarks/prm_scaling.py --labels runs/labels/*.train.jsonl --dev-labels runs/labels/*.dev.jsonl \\
        --eval-labels runs/labels/hotpotqa.test.jsonl --target mix \\
        --out benchmarks/results/prm_scaling.json --plot benchmarks/results/prm_scaling.png

Trains the encoder PRM on 10%, 30% and 100% of the training questions (same seed, same dev early
stopping) and scores each against the held-out labels: AUROC against gold evidence and against MC labels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--dev-labels", nargs="+", required=True)
    ap.add_argument("--eval-labels", nargs="+", required=True)
    ap.add_argument("--target", default="mix", choices=["soft", "hard", "gold", "mix"])
    ap.add_argument("--inputs", default="interactions", choices=["full", "interactions"])
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)

    import torch

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.cli.prm import _gold_questions
    from reasonrag.prm.encoder_prm import EncoderPRM, EncoderPRMConfig
    from reasonrag.prm.evaluation import evaluate_prm
    from reasonrag.prm.loading import load_prm
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.prm_training import PRMTrainingConfig, attach_gold, train_prm

    quiet_libraries()
    train, dev, held = read_labels(args.labels), read_labels(args.dev_labels), read_labels(args.eval_labels)
    gold = _gold_questions(train + dev + held, None)
    attach_gold(train, gold)
    attach_gold(dev, gold)
    rows = []
    shared = None
    for frac in args.fractions:
        torch.manual_seed(0)
        cfg = PRMTrainingConfig(target=args.target, fraction=frac)
        prm = EncoderPRM(config=EncoderPRMConfig(inputs=args.inputs, dropout=args.dropout))
        if shared is not None:
            prm._cache = shared  # one frozen encoder: embed every text once for all runs
        with tempfile.TemporaryDirectory() as tmp:
            result = train_prm(prm, train, dev, Path(tmp) / "prm", cfg, progress=False)
            shared = prm._cache
            best = load_prm(Path(tmp) / "prm")
            best._cache = shared
            report = evaluate_prm(best, held, gold)
        rows.append(
            {
                "fraction": frac,
                "train_labeled_steps": result["train_labeled_steps"],
                "seconds": result["seconds"],
                "vs_gold": {k: v["auroc"] for k, v in report["vs_gold"].items()},
                "vs_mc": {k: v["auroc"] for k, v in report["vs_mc"].items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {"target": args.target, "eval_labels": args.eval_labels, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        xs = [r["train_labeled_steps"] for r in rows]
        for stage in ("retrieve", "extract", "synthesize"):
            ax.plot(xs, [r["vs_gold"].get(stage) for r in rows], marker="o", label=f"{stage} vs gold")
            ax.plot(
                xs, [r["vs_mc"].get(stage) for r in rows], marker="x", linestyle=":", label=f"{stage} vs MC"
            )
        ax.set_xscale("log")
        ax.set_xlabel("labeled training steps")
        ax.set_ylabel("AUROC (held out)")
        ax.axhline(0.75, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

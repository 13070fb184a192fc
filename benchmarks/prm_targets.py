"""Which training target makes the best encoder PRM: MC values, hard MC labels, gold step labels or a mix.

    python benchmarks/prm_targets.py --labels runs/labels/*.train.jsonl --dev-labels runs/labels/*.dev.jsonl \\
        --out-dir runs/prm --json benchmarks/results/prm_targets_dev.json

Trains one encoder PRM per target in one process (the frozen encoder's embeddings are computed once and
shared), each with the same settings as `reasonrag train-prm`, and reports per-stage AUROC on the dev
labels against gold evidence and against MC labels. Each model is saved under --out-dir/TARGET with the
equivalent `reasonrag train-prm` command in its manifest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--dev-labels", nargs="+", required=True)
    ap.add_argument("--targets", nargs="+", default=["soft", "hard", "gold", "mix"])
    ap.add_argument("--inputs", default="interactions", choices=["full", "interactions"])
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)

    import torch

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.cli.prm import _gold_questions
    from reasonrag.prm.encoder_prm import EncoderPRM, EncoderPRMConfig
    from reasonrag.prm.evaluation import evaluate_prm
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.prm_training import PRMTrainingConfig, attach_gold, train_prm

    quiet_libraries()
    train, dev = read_labels(args.labels), read_labels(args.dev_labels)
    gold = _gold_questions(train + dev, None)
    attach_gold(train, gold)
    attach_gold(dev, gold)
    shared_cache = None
    rows = {}
    for target in args.targets:
        torch.manual_seed(0)
        prm = EncoderPRM(config=EncoderPRMConfig(dropout=args.dropout, inputs=args.inputs))
        if shared_cache is not None:
            prm._cache = shared_cache  # the same frozen encoder: reuse its embeddings
        out = Path(args.out_dir) / target
        command = (
            f"reasonrag train-prm --labels {' '.join(args.labels)} --dev-labels {' '.join(args.dev_labels)} "
            f"--target {target} --inputs {args.inputs} --dropout {args.dropout} --out {out}"
        )
        t0 = time.perf_counter()
        result = train_prm(
            prm,
            train,
            dev,
            out,
            PRMTrainingConfig(target=target),
            progress=False,
            manifest={"labels": args.labels, "command": command},
        )
        seconds = time.perf_counter() - t0
        shared_cache = prm._cache
        prm.eval()
        report = evaluate_prm(prm, dev, gold)
        rows[target] = {
            "best_epoch": result["best_epoch"],
            "train_labeled_steps": result["train_labeled_steps"],
            "train_seconds": round(seconds, 1),
            "dev_vs_gold": {k: v["auroc"] for k, v in report["vs_gold"].items()},
            "dev_vs_mc": {k: v["auroc"] for k, v in report["vs_mc"].items()},
            "dev_mc_values_vs_gold": {k: v["auroc"] for k, v in report["mc_vs_gold"].items()},
        }
        print(target, json.dumps(rows[target]), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({"inputs": args.inputs, "dropout": args.dropout, "targets": rows}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

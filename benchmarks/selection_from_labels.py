"""Best-of-N selection rules on labeled dev trajectories, without running the agent again.

    python benchmarks/selection_from_labels.py --labels runs/labels/hotpotqa.dev.jsonl runs/labels/2wikimultihopqa.dev.jsonl \\
        --out benchmarks/results/selection_dev.json
    python benchmarks/selection_from_labels.py --labels runs/labels/hotpotqa.test.jsonl \\
        --calibration-labels runs/labels/hotpotqa.dev.jsonl runs/labels/2wikimultihopqa.dev.jsonl \\
        --out benchmarks/results/selection_test_hotpotqa.json

A labels file holds each question's sampled trajectories (`reasonrag label --trajectories N`) with their
outcomes, so it is a ready pool of N samples per question: more questions per minute than `compare` in
`inference_search.py`, which has to sample them. Each trajectory is scored by the PRM as the agent scores
it (the whole path, and the final step alone for ORM), then every rule of `reasonrag.selection` keeps
one. Two rules that are not in the product are measured next to them:

- `cmin`: `min` over per-stage calibrated scores. Each stage's score is mapped to P(correct answer) by a
  Platt fit on the other half of the questions (two folds by question), so a stage whose raw scores run
  low cannot decide `min` alone.
- `vote*min`: answers weighted by the `min` score of the paths that gave them (Math-Shepherd's weighted
  self-consistency).

Only questions whose pool mixes right and wrong answers can tell the rules apart; their count is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import defaultdict
from pathlib import Path

from reasonrag.data.types import STAGES


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def platt(xs: list[float], ys: list[float], iters: int = 3000, lr: float = 0.2) -> tuple[float, float]:
    """P(y=1 | score) = sigmoid(a * logit(score) + b), fit by gradient descent on the log loss."""
    import numpy as np

    x = np.array([_logit(v) for v in xs])
    y = np.array(ys, dtype=float)
    a, b = 1.0, 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a * x + b)))
        a -= lr * float(((p - y) * x).mean())
        b -= lr * float((p - y).mean())
    return a, b


def calibrate(pools: list[list[dict]]) -> dict[str, tuple[float, float]]:
    data: dict[str, tuple[list, list]] = {s: ([], []) for s in STAGES}
    for pool in pools:
        for s in pool:
            for stage, score in zip(s["stages"], s["scores"]):
                data[stage][0].append(score)
                data[stage][1].append(s["em"])
    return {st: platt(*data[st]) if data[st][0] else (1.0, 0.0) for st in STAGES}


def calibrated_min(sample: dict, fit: dict[str, tuple[float, float]]) -> float:
    out = []
    for stage, score in zip(sample["stages"], sample["scores"]):
        a, b = fit[stage]
        out.append(1 / (1 + math.exp(-(a * _logit(score) + b))))
    return min(out)


def pools_from_labels(paths: list[str], prm) -> dict[str, list[list[dict]]]:
    """Per corpus, one pool per question: each distinct trajectory repeated as often as it was sampled."""
    from reasonrag.data.rewards import exact_match
    from reasonrag.training.labeling import read_labels

    records = read_labels(paths)
    full = prm.score([{"question": r["question"], "steps": r["steps"]} for r in records])
    alone = prm.score([{"question": r["question"], "steps": [r["steps"][-1]]} for r in records])
    by_q: dict[tuple, list[dict]] = defaultdict(list)
    for r, scores, orm in zip(records, full, alone):
        sample = {
            "answer": r.get("answer", ""),
            "scores": [float(x) for x in scores],
            "min": min(scores),
            "orm": float(orm[0]),
            "stages": r["stages"],
            "em": exact_match(r.get("answer", ""), r["golden_answers"]),
        }
        by_q[(r.get("corpus", "?"), r["question_id"])].extend([sample] * int(r.get("count", 1)))
    out: dict[str, list[list[dict]]] = defaultdict(list)
    for (corpus, _), pool in sorted(by_q.items()):
        out[corpus].append(pool)
    return dict(out)


def evaluate(pools: list[list[dict]], seed: int = 0, fit: dict | None = None) -> dict:
    from reasonrag.agent.best_of_n import SELECTORS, select_sample
    from reasonrag.data.rewards import normalize_answer

    rng = random.Random(seed)
    fold = [rng.random() < 0.5 for _ in pools]
    if fit is None:  # cross-fitted: each half is calibrated on the other
        fits = [
            calibrate([p for p, f in zip(pools, fold) if f]),
            calibrate([p for p, f in zip(pools, fold) if not f]),
        ]
    else:
        fits = [fit, fit]
    rows: dict[str, float] = {}
    for sel in SELECTORS:
        rows[sel] = sum(p[select_sample(p, sel)]["em"] for p in pools)
    rows["cmin"] = sum(
        max(p, key=lambda s, f=f: calibrated_min(s, fits[f]))["em"] for p, f in zip(pools, fold)
    )

    def weighted_vote(pool: list[dict]) -> float:
        weight: dict[str, float] = defaultdict(float)
        for s in pool:
            weight[normalize_answer(s["answer"])] += s["min"]
        best = max(weight, key=weight.get)
        return next(s["em"] for s in pool if normalize_answer(s["answer"]) == best)

    rows["vote*min"] = sum(weighted_vote(p) for p in pools)
    rows["oracle"] = sum(max(s["em"] for s in p) for p in pools)
    n = len(pools)
    return {
        "questions": n,
        "samples_per_question": round(sum(len(p) for p in pools) / n, 2),
        "mixed_questions": sum(1 for p in pools if len({s["em"] for s in p}) > 1),
        "em": {k: round(100 * v / n, 1) for k, v in rows.items()},
        "calibration": {k: [round(a, 3), round(b, 3)] for k, (a, b) in (fit or calibrate(pools)).items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", nargs="+", required=True, help="labels JSONL files (dev, not test)")
    ap.add_argument(
        "--calibration-labels",
        nargs="+",
        default=None,
        help="fit `cmin`'s calibration on these labels (dev) instead of cross-fitting on --labels; "
        "use it to report on test labels without fitting on them",
    )
    ap.add_argument("--prm", default=None, help="PRM directory (default: the shipped one)")
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args(argv)

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.prm.loading import load_prm

    quiet_libraries()
    prm = load_prm(args.prm)
    pools = pools_from_labels(args.labels, prm)
    fit = None
    if args.calibration_labels:
        fit = calibrate([p for ps in pools_from_labels(args.calibration_labels, prm).values() for p in ps])
    result = {
        "labels": args.labels,
        "calibration_labels": args.calibration_labels,
        "corpora": {c: evaluate(p, fit=fit) for c, p in pools.items()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

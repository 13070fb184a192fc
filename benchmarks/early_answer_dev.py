"""Choose `early_answer` on dev without a run per threshold: exact for greedy search.

    python benchmarks/early_answer_dev.py \
        --forced runs/search_dev/greedy_hotpotqa_dev.jsonl --free runs/search_dev/greedy_h1_hotpotqa_dev.jsonl \
        --out benchmarks/results/early_answer_dev.json

`--forced` holds the greedy predictions with the default `min_hops=2` (hop 1 never answers), `--free` the
same questions with `policy.min_hops=1` (the reader's own "answer now or hop again" decides at hop 1).
Greedy is deterministic, so both runs walk the same first hop; with `early_answer=T` a question stops at
hop 1 exactly when the free run stopped there and the best answer held at least T of the answers'
probability, and then its record is the free run's, else the forced run's. Pairs of files are given per
corpus (repeat --forced/--free in the same order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)


def read_records(path: str) -> dict[str, dict[str, Any]]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r["id"]] = r
    return out


def first_answer_share(record: dict[str, Any]) -> float | None:
    """The best answer's share at the first answer step when the free run answered there, else None."""
    first = next((s for s in record["steps"] if s["stage"] == "synthesize"), None)
    if first is None or first["detail"].get("type") != "answer" or first["hop"] != 0:
        return None
    probs = [c["prob"] for c in first["candidates"] if c["text"] != "(another hop)"]
    return max(probs) / sum(probs) if sum(probs) > 0 else None


def simulate(forced: dict, free: dict, threshold: float) -> dict[str, float]:
    ids = [i for i in forced if i in free]
    rows = []
    for i in ids:
        share = first_answer_share(free[i])
        early = share is not None and threshold > 0 and share >= threshold
        rows.append((free[i] if early else forced[i], early))
    n = len(rows)
    return {
        "early_answer": threshold,
        "n": n,
        "em": round(100 * sum(r["em"] for r, _ in rows) / n, 2),
        "f1": round(100 * sum(r["f1"] for r, _ in rows) / n, 2),
        "answered_at_hop_1": round(100 * sum(e for _, e in rows) / n, 1),
        "mean_hops": round(sum(r["hops"] for r, _ in rows) / n, 2),
        "seconds_per_question": round(sum(r["seconds"] for r, _ in rows) / n, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forced", action="append", required=True, help="min_hops=2 predictions (JSONL)")
    ap.add_argument("--free", action="append", required=True, help="min_hops=1 predictions, same questions")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if len(args.forced) != len(args.free):
        raise SystemExit("give --forced and --free in pairs")
    result: dict[str, Any] = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    for fp, gp in zip(args.forced, args.free):
        forced, free = read_records(fp), read_records(gp)
        name = Path(fp).stem
        result[name] = [simulate(forced, free, t) for t in args.thresholds]
        print(f"## {name}")
        for row in result[name]:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render benchmarks/results/eval_test_*.json as the README's markdown results table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    rows = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("eval_test_*.json")):
        rows += json.loads(path.read_text())["rows"]
    print(
        "| corpus (test) | agent | n | EM | F1 | cover-EM | gold-paragraph recall | supporting-sentence recall "
        "| mean hops | p50 s | p95 s | peak MB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ev = "n/a" if r["evidence_recall"] is None else r["evidence_recall"]
        print(
            f"| {r['corpus']} | {r['agent']} | {r['n']} | {r['em']} | {r['f1']} | {r['cover_em']} | "
            f"{r['retrieval_recall']} | {ev} | {r['mean_hops']} | {r['latency_p50_s']} | {r['latency_p95_s']} | "
            f"{r['peak_memory_mb']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Monte Carlo labeling on Ray with 1 and 2 workers, next to the same labels made in one process.

    python benchmarks/ray_scaling.py --limit 16 --out benchmarks/results/ray_label_scaling.json

Each run is the real command, `reasonrag label ... --ray --workers W` (a local cluster of W CPUs, one
agent per worker), on the same questions and seed, in one sitting; the one-process run (`--concurrency 1`,
no Ray) comes first and is the reference the Ray files must equal line for line (order aside). Reported per
run: wall time (cluster start, model loading in every worker, labeling), the labeling loop alone,
questions per second, and the mean compute seconds per question inside a worker. The projection for more
workers divides a question's cost by the worker count and adds the start-up measured here; it holds while
workers have a core each and the driver (which only writes lines) keeps up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="hotpotqa")
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--trajectories", type=int, default=4)
    ap.add_argument("--completions", type=int, default=4)
    ap.add_argument("--max-hops", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    exe = [sys.executable, "-m", "reasonrag", "label", "--corpus", args.corpus, "--split", args.split]
    exe += ["--limit", str(args.limit), "--trajectories", str(args.trajectories)]
    exe += [
        "--completions",
        str(args.completions),
        "--max-hops",
        str(args.max_hops),
        "--json",
        "--no-progress",
    ]
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "local.jsonl"
        summary, wall = run([*exe, "--out", str(local)])
        runs.append({"mode": "one process", "workers": 1, "wall_seconds": round(wall, 1), **_pick(summary)})
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        reference = sorted(local.read_text().splitlines())
        for workers in args.workers:
            out = Path(tmp) / f"ray{workers}.jsonl"
            summary, wall = run([*exe, "--out", str(out), "--ray", "--workers", str(workers)])
            same = sorted(out.read_text().splitlines()) == reference
            runs.append(
                {
                    "mode": "ray",
                    "workers": workers,
                    "wall_seconds": round(wall, 1),
                    "same_lines_as_one_process": same,
                    **_pick(summary),
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    one = next(r for r in runs if r["mode"] == "ray" and r["workers"] == 1)
    startup = round(one["wall_seconds"] - one["seconds_per_question"] * one["questions"], 1)
    per_question = one["seconds_per_question"]
    projection = [
        {
            "workers": w,
            "questions_per_second": round(w / per_question, 4),
            "wall_seconds_for_1000_questions": round(startup + 1000 * per_question / w, 1),
        }
        for w in (1, 2, 4, 8, 16, 32, 64)
    ]
    result = {
        "benchmark": "ray_label_scaling",
        "command": "python benchmarks/ray_scaling.py " + " ".join(sys.argv[1:]),
        "settings": vars(args),
        "runs": runs,
        "projection": {
            "model": "questions/s = workers / (seconds per question of one worker); wall = start-up + n x that",
            "seconds_per_question_one_worker": per_question,
            "startup_seconds": startup,
            "points": projection,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _pick(summary: dict) -> dict:
    return {
        "questions": summary["questions_new"],
        "rollouts": summary["rollouts"],
        "loop_seconds": summary["seconds"],
        "questions_per_second": summary["questions_per_second"],
        "seconds_per_question": summary["seconds_per_question"],
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""Real GGUF LLMs as policy and as judge beside the embedded default, on hotpotqa dev (issue 20).

    python benchmarks/byo_llm.py --gguf-dir DIR --limit 50 --runs embedded q05_policy q05_judge \
        --out benchmarks/results/byo_llm_dev50.json

Each run is one `reasonrag eval --json` with its own `--predictions` file under `--work`, so a run that
is stopped (or runs out of time) resumes where it stopped when the same command is run again; rerun with
a smaller `--limit` to summarise only the questions that finished. The JSON keeps every run's eval
summary, its wall time and the load average before and after, because on a shared machine the seconds
say as much about the load as about the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "q05": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "q15": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
}
# Greedy, one candidate a stage, short replies: what fits two CPU cores (docs/results.md).
POLICY_OPTIONS = ["temperature=0", "n_candidates=1", "max_new_tokens=32"]


def run_args(name: str, gguf_dir: Path) -> list[str]:
    """The eval arguments of a run: `embedded`, or `<model>_policy` / `<model>_judge`."""
    if name == "embedded":
        return []
    model, role = name.split("_")
    path = str(gguf_dir / MODELS[model])
    if role == "policy":
        return ["--llm", f"gguf:{path}", *(x for o in POLICY_OPTIONS for x in ("--policy-option", o))]
    if role == "judge":
        return ["--judge", f"gguf:{path}"]
    raise SystemExit(f"unknown run {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf-dir", type=Path, required=True, help="folder holding the .gguf files")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--runs", nargs="+", default=["embedded", "q05_policy", "q05_judge"])
    parser.add_argument("--work", type=Path, default=Path("runs/byo_llm"), help="predictions files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})
    results["command"] = "python benchmarks/byo_llm.py " + " ".join(sys.argv[1:])
    results["policy_options"] = POLICY_OPTIONS
    results["machine"] = {"cpus": os.cpu_count()}
    for name in args.runs:
        cmd = ["reasonrag", "eval", "--corpus", "hotpotqa", "--split", "dev", "--limit", str(args.limit)]
        cmd += ["--json", "--no-progress", "--predictions", str(args.work / f"{name}.jsonl")]
        cmd += run_args(name, args.gguf_dir)
        load_before, start = os.getloadavg()[0], time.time()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
        summary = json.loads(done.stdout)
        summary.update(
            wall_s=round(time.time() - start, 1),
            load_before=round(load_before, 2),
            load_after=round(os.getloadavg()[0], 2),
            eval_args=[a.replace(str(args.gguf_dir) + os.sep, "") for a in cmd[2:]],
        )
        results["runs"][f"{name}{args.limit}"] = summary
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(name, {k: summary.get(k) for k in ("n", "em", "f1", "prm_auroc", "latency_p50_s", "wall_s")})


if __name__ == "__main__":
    main()

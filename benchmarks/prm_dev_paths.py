"""PRMs side by side on the agent's own dev paths: AUROC per stage and sibling top-1.

    python benchmarks/prm_dev_paths.py --paths runs/verifier/paths-dev.jsonl \
        --prm shipped reasonrag/weights/prm --prm verifier runs/verifier/listwise \
        --out benchmarks/results/prm_dev_paths.json

The paths file is what `python -m reasonrag.training.verifier_paths --split dev` writes: every candidate
the policy would try at every state the agent reached, executed and labeled exactly from the gold. Each PRM
scores every candidate after its path; reported per PRM: AUROC against the labels per stage (answers apart
from "another hop") and, of the states with a right candidate, how often its highest score picks a right
one, beside the policy's own pick. Cheap (no agent runs): the scores are one batched pass per PRM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", required=True, help="a verifier_paths JSONL file (dev questions)")
    ap.add_argument(
        "--prm", nargs=2, action="append", required=True, metavar=("NAME", "DIR"), help="a PRM (repeatable)"
    )
    ap.add_argument("--out", default=None, help="write the rows here (JSON, replaced)")
    args = ap.parse_args(argv)
    paths = Path(args.paths)
    if not paths.is_file():
        ap.error(f"--paths {paths}: no such file")
    from tqdm import tqdm

    from reasonrag.prm.loading import load_prm
    from reasonrag.training.verifier_ranking import sibling_choice
    from reasonrag.training.verifier_training import auroc_by_group

    examples = [e for line in paths.open(encoding="utf-8") for e in json.loads(line)["examples"]]
    rows = {}
    for name, directory in args.prm:
        prm = load_prm(directory)
        t0 = time.perf_counter()
        scores: list[float] = []
        for i in tqdm(range(0, len(examples), 64), desc=name, unit="batch", file=sys.stderr):
            chunk = examples[i : i + 64]
            if hasattr(prm, "score_last"):
                scores.extend(float(x) for x in prm.score_last(chunk))
            else:
                scores.extend(float(s[-1]) for s in prm.score(chunk))
        rows[name] = {
            "prm": directory,
            "steps": len(examples),
            "auroc": auroc_by_group(scores, examples),
            "sibling_top1": {  # the PRM's pick beside the policy's, per stage
                stage: {"states": v["states"], "prm": v["verifier"], "policy": v["policy"]}
                for stage, v in sibling_choice(scores, examples).items()
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps({name: rows[name]}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"paths": str(paths), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`reasonrag export`: step labels as TRL datasets (stepwise PRM supervision, process-level DPO pairs)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reasonrag.cli.checks import float_in


def cmd_export(args: argparse.Namespace) -> int:
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.trl_export import export_labels

    options: dict[str, Any] = {}
    if args.format == "trl-dpo":
        options = dict(
            pairs=args.pairs,
            style=args.style,
            value=args.pair_value,
            margin=args.margin,
            outcome=args.outcome,
        )
    summary = export_labels(read_labels(args.labels), args.out, args.format, **options)
    if args.json:
        print(json.dumps(summary))
        return 0
    stages = ", ".join(f"{k} {v}" for k, v in summary["by_stage"].items())
    what = "trajectories" if args.format == "trl-prm" else "pairs"
    print(f"{summary['rows']} {what} as {args.format} in {summary['out']}/train.jsonl ({stages})")
    if summary.get("skipped_unlabeled"):
        print(f"  left out {summary['skipped_unlabeled']} trajectories with an unlabeled step")
    if "by_pair" in summary:
        print(f"  sibling pairs {summary['by_pair']['sibling']}, answer pairs {summary['by_pair']['answer']}")
    print(f"  load with: datasets.load_dataset('json', data_files='{summary['out']}/train.jsonl')")
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag export`."""
    p = sub.add_parser(
        "export",
        help="write step labels as TRL datasets (trl-prm: stepwise supervision; trl-dpo: preference pairs)",
        description="Turn a labels file of `reasonrag label` into a dataset TRL trains on: trl-prm is TRL's "
        "stepwise-supervision format (prompt, completions, labels; stages kept), trl-dpo holds process-level "
        "preference pairs (prompt, chosen, rejected) from sibling actions and answer candidates. Writes "
        "OUT/train.jsonl and OUT/manifest.json. Recipes: docs/trl.md.",
    )
    p.add_argument("--labels", required=True, nargs="+", help="labels JSONL file(s) from `reasonrag label`")
    p.add_argument("--format", required=True, choices=["trl-prm", "trl-dpo"], help="the dataset to write")
    p.add_argument("--out", required=True, help="output directory (replaced whole when done)")
    g = p.add_argument_group("trl-dpo")
    g.add_argument(
        "--pairs",
        default="both",
        choices=["sibling", "answer", "both"],
        help="sibling actions ranked by value, answer candidates ranked by outcome, or both (default: both)",
    )
    g.add_argument(
        "--style",
        default="conversational",
        choices=["conversational", "standard"],
        help="chat messages for an instruct model, or plain text for a base model (default: conversational)",
    )
    g.add_argument(
        "--pair-value", default="spre", choices=["spre", "mc"], help="value ranking siblings (default: spre)"
    )
    g.add_argument(
        "--margin",
        type=float_in(0.0, 1.0),
        default=0.1,
        help="least value (or outcome) gap of a pair, 0 to 1 (default: 0.1)",
    )
    g.add_argument(
        "--outcome",
        default="em",
        choices=["em", "f1", "cover_em"],
        help="outcome ranking answer candidates (default: em)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=cmd_export)

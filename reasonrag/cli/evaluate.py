"""`reasonrag eval`: answer a split and report EM, F1, recalls, hops, latency and PRM AUROC."""

from __future__ import annotations

import argparse
import json
from functools import partial
from typing import Any

from reasonrag.cli.checks import check_agent_options, check_output_file
from reasonrag.cli.options import (
    add_agent_options,
    add_question_options,
    add_scale_options,
    agent_setting,
    build_agent_from_args,
    quiet_libraries,
    ray_options,
    run_inputs,
    select_questions,
)


def eval_worker(args: argparse.Namespace):
    """The agent the options describe, built inside a Ray actor (which loads the corpus and models itself)."""
    from reasonrag.evaluation.evaluate import EvalWorker

    quiet_libraries()
    _, graph = build_agent_from_args(args)
    return EvalWorker(graph, args.max_hops, run_inputs(args))


def cmd_eval(args: argparse.Namespace) -> int:
    from reasonrag.data.corpus import Corpus
    from reasonrag.evaluation.evaluate import evaluate
    from reasonrag.evaluation.predictions import check_predictions_path, read_predictions

    # Everything about the inputs is checked before a model loads.
    check_agent_options(args)
    corpus = Corpus.load(args.corpus)
    questions = select_questions(args, corpus)
    setting = agent_setting(args, corpus)
    if args.predictions:
        check_output_file(args.predictions, "--predictions")
        read_predictions(check_predictions_path(args.predictions), setting, questions)
    ray = ray_options(args)
    graph = None  # on Ray every worker builds its own agent; this process only writes the predictions
    if ray is None:
        _, graph = build_agent_from_args(args, corpus, concurrent=args.concurrency > 1)
    summary = evaluate(
        graph,
        questions,
        max_hops=args.max_hops,
        predictions=args.predictions,
        progress=not args.no_progress,
        inputs=run_inputs(args),
        setting=setting,
        concurrency=args.concurrency,
        ray=ray,
        ray_worker=partial(eval_worker, args) if ray is not None else None,
    )
    summary.update(corpus=corpus.name, split=args.split, max_hops=args.max_hops, k=args.k)
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [
            ("questions", summary["n"]),
            ("EM", summary["em"]),
            ("F1", summary["f1"]),
            ("cover-EM", summary["cover_em"]),
            ("retrieval recall (gold paragraphs)", summary["retrieval_recall"]),
            ("evidence recall (supporting sentences)", summary["evidence_recall"]),
            ("mean hops", summary["mean_hops"]),
            ("latency p50 (s)", summary["latency_p50_s"]),
            ("latency p95 (s)", summary["latency_p95_s"]),
            ("peak memory (MB)", summary["peak_memory_mb"]),
        ]
        for stage, auc in (summary.get("prm_auroc") or {}).items():
            rows.append((f"PRM AUROC vs gold evidence: {stage}", auc))
        siblings = summary.get("sibling_top1") or {}
        for stage, n in (siblings.get("states") or {}).items():
            if n:
                pick = f"PRM {siblings['prm'][stage]}, policy {siblings['policy'][stage]} ({n} states)"
                rows.append((f"sibling top-1 (critic): {stage}", pick))
        print(f"{corpus.name} / {args.split or 'all'}")
        for name, value in rows:
            print(f"  {name:<40} {'-' if value is None else value}")
        if args.predictions:
            resumed = f" ({summary['resumed']} resumed from an earlier run)" if summary["resumed"] else ""
            print(f"  predictions in {args.predictions}{resumed}")
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag eval`."""
    p = sub.add_parser(
        "eval",
        help="answer a split and report EM, F1, recalls, hops and latency",
        description="Answer the questions of a split and report EM, F1, cover-EM, gold-paragraph "
        "recall of retrieval, supporting-sentence recall of extraction, mean hops and "
        "p50/p95 latency.",
    )
    add_agent_options(p)
    add_question_options(p, None, "train, dev or test (default: all questions)")
    p.add_argument(
        "--predictions",
        default=None,
        metavar="FILE",
        help="append each question's prediction and trajectory to this JSONL file as it is made; rerun "
        "the same command to resume after an interruption (the summary is computed from the file)",
    )
    add_scale_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

"""`reasonrag label`: explore trajectories and write Monte Carlo step labels."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from reasonrag.cli.checks import check_agent_options, check_output_file, float_in, int_in
from reasonrag.cli.options import (
    add_agent_options,
    add_question_options,
    add_scale_options,
    make_policy,
    make_retriever,
    quiet_libraries,
    ray_options,
    select_questions,
)
from reasonrag.data.limits import MAX_COMPLETIONS, MAX_TRAJECTORIES


def label_config(args: argparse.Namespace):
    from reasonrag.training.labeling import LabelConfig

    return LabelConfig(
        trajectories=args.trajectories,
        completions=args.completions,
        gamma=args.gamma,
        success=args.success,
        threshold=args.success_threshold
        if args.success_threshold is not None
        else (1.0 if args.success != "f1" else 0.5),
        max_hops=args.max_hops,
        k=args.k,
        seed=args.seed,
    )


def label_worker(args: argparse.Namespace, corpus=None):
    """Everything that labels a question, from the options: here, or inside a Ray actor (which calls it
    with the options alone and loads the corpus and models itself)."""
    from reasonrag.agent.nodes import AgentSteps
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.retriever import as_search_backend
    from reasonrag.training.labeling import CachedSearch, Labeler, LabelWorker

    quiet_libraries()
    corpus = corpus if corpus is not None else Corpus.load(args.corpus)
    search = CachedSearch(as_search_backend(make_retriever(args, corpus)))
    policy = make_policy(args)
    judge = None
    if args.judge:
        from reasonrag.prm.judge import llm_judge

        judge = llm_judge(args.judge)
    labeler = Labeler(AgentSteps(search, policy, max_hops=args.max_hops, k=args.k), label_config(args))
    return LabelWorker(labeler, judge, corpus.name)


def cmd_label(args: argparse.Namespace) -> int:
    from reasonrag.data.corpus import Corpus
    from reasonrag.training.labeling import Labeler, label_questions, resume_point

    config = label_config(args)
    ray = ray_options(args)
    # Everything about the inputs is checked before a model loads.
    check_agent_options(args)
    corpus = Corpus.load(args.corpus)
    questions = select_questions(args, corpus)
    check_output_file(args.out)
    resume_point(Path(args.out), config)  # labels made with other settings are an error now, not later
    if ray is not None:  # the actors load the models; this process only writes the file
        worker = None
        labeler, judge = Labeler(None, config), None
    else:
        worker = label_worker(args, corpus)
        labeler, judge = worker.labeler, worker.judge
    summary = label_questions(
        labeler,
        questions,
        args.out,
        corpus=corpus.name,
        progress=not args.no_progress,
        judge=judge,
        concurrency=args.concurrency,
        ray=ray,
        ray_worker=partial(label_worker, args) if ray is not None else None,
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"labels in {summary['out']}: {summary['questions_new']} new question(s), "
        f"{summary['questions_resumed']} already done"
    )
    print(
        f"  new: {summary['trajectories_new']} distinct trajectories ({summary['samples_new']} sampled), "
        f"{summary['labeled_steps_new']} labeled steps, {summary['positive_steps_new']} positive"
    )
    print(
        f"  rollouts run {summary['rollouts']} (a per-step labeler: {summary['rollouts_without_prefix_sharing']}); "
        f"nodes run {summary['nodes']} (without reuse: {summary['nodes_without_reuse']})"
    )
    print(
        f"  reader windows computed {summary['reader_windows_computed']} of {summary['reader_windows_requested']} "
        f"asked; searches computed {summary['searches_computed']} of {summary['searches_requested']}"
    )
    where = f"{summary['workers']} Ray worker(s)" if summary["on_ray"] else f"{summary['workers']} at a time"
    print(f"  {summary['seconds']}s, {summary['rollouts_per_second']} rollouts/s, {where}")
    versus = summary.get("judge_vs_mc")
    if versus and versus.get("steps"):
        auc = "-" if versus["auroc"] is None else f"{versus['auroc']:.3f}"
        print(
            f"  judge vs MC labels ({versus['steps']} steps, {summary['judge_requests']} judge calls): "
            f"agreement {versus['agreement']:.3f}, AUROC {auc}, mean |judge - MC value| {versus['mean_abs_diff']}"
        )
    print("  trajectories by step count (whole file):")
    for n, b in summary.get("by_steps", {}).items():
        print(
            f"    {n:>3} steps: {b['trajectories']:>5} distinct, {b['samples']:>5} sampled, "
            f"success {b['success_rate']:.2f}, mean MC value {b['mean_value']:.2f}"
        )
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag label`."""
    p = sub.add_parser(
        "label",
        help="explore trajectories and write Monte Carlo step labels (resumable JSONL)",
        description="Sample trajectories from the policy and, from the state after every step, roll out "
        "completions; a step's MC value is the fraction of its completions that reach a gold answer "
        "(hard label: any does; SPRE: outcomes discounted by gamma ** steps). Appends one JSON line per "
        "distinct trajectory to --out; rerun the same command to resume after an interruption.",
    )
    p.add_argument("--out", required=True, help="labels JSONL file (appended to; resumed if it exists)")
    add_agent_options(p)
    add_question_options(p, "train", "which questions to label (default: train)")
    p.add_argument(
        "--trajectories",
        type=int_in(1, MAX_TRAJECTORIES),
        default=15,
        help=f"trajectories sampled per question, 1 to {MAX_TRAJECTORIES} (default: 15)",
    )
    p.add_argument(
        "--completions",
        type=int_in(0, MAX_COMPLETIONS),
        default=16,
        help=f"rollouts from every step's state, 0 to {MAX_COMPLETIONS} (default: 16; 0 explores only: no MC values, for "
        "`train-policy --process-reward prm`)",
    )
    p.add_argument(
        "--gamma",
        type=float_in(0.0, 1.0, low_open=True),
        default=0.9,
        help="SPRE discount per step, in (0, 1] (default: 0.9)",
    )
    p.add_argument(
        "--success",
        default="em",
        choices=["em", "f1", "cover_em"],
        help="outcome metric of a rollout (default: em)",
    )
    p.add_argument(
        "--success-threshold",
        type=float_in(0.0, 1.0, low_open=True),
        default=None,
        help="success when the metric reaches this (default: 1; f1: 0.5)",
    )
    add_scale_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=cmd_label)

"""`reasonrag ask`: answer one question and show every step."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from reasonrag.cli.checks import check_agent_options
from reasonrag.cli.options import add_agent_options, build_agent_from_args, run_inputs
from reasonrag.cli.output import print_trajectory
from reasonrag.data.limits import check_question
from reasonrag.data.terminal import terminal_text


def cmd_ask(args: argparse.Namespace) -> int:
    from reasonrag.agent.graph import run_agent

    question = check_question(args.question, ': give it as the first argument, e.g. reasonrag ask "Who ...?"')
    check_agent_options(args)
    t0 = time.perf_counter()
    _, graph = build_agent_from_args(args)
    t1 = time.perf_counter()
    state = run_agent(graph, question, max_hops=args.max_hops, **run_inputs(args))
    t2 = time.perf_counter()
    if args.json:
        steps = [
            {
                k: s.get(k)
                for k in ("stage", "hop", "action", "prob", "score", "observation", "candidates", "critic")
            }
            for s in state["steps"]
        ]
        print(
            json.dumps(
                {
                    "question": question,
                    "answer": state.get("answer", ""),
                    "status": state.get("status"),
                    "steps": steps,
                    "backtracks": state.get("backtracks", 0),
                    "abandoned": state.get("abandoned", []),
                    "path_score": state.get("path_score"),
                    "hops": sum(1 for s in state["steps"] if s["stage"] == "retrieve"),
                    **(
                        {"samples": state["samples"], "selected": state["selected"]}
                        if "samples" in state
                        else {}
                    ),
                    "seconds": {"load": round(t1 - t0, 3), "answer": round(t2 - t1, 3)},
                }
            )
        )
    else:
        print(f"Question: {terminal_text(question)}\n")
        print_trajectory(state)
        print(f"(answered in {t2 - t1:.2f}s; models loaded in {t1 - t0:.1f}s)", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag ask`."""
    p = sub.add_parser(
        "ask",
        help="answer one question and show every step",
        description="Answer one question; prints each step (stage, query, evidence, answer).",
    )
    p.add_argument("question", help="the question, in quotes")
    add_agent_options(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with answer, steps and backtracks"
    )
    p.set_defaults(func=cmd_ask)

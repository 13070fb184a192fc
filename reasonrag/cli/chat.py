"""`reasonrag chat`: the terminal loop around `ChatSession` and its command-line options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reasonrag.agent.chat_session import PROMPT, ChatSession
from reasonrag.cli.checks import check_agent_options
from reasonrag.cli.options import (
    add_agent_options,
    check_search_options,
    load_agent_prm,
    make_policy,
    make_retriever,
    stop_threshold_of,
)
from reasonrag.errors import InputError

if TYPE_CHECKING:
    pass


def repl(session: ChatSession, stdin: TextIO | None = None) -> int:
    """Read lines until /quit or end of input; Ctrl-C at the prompt clears the line, during a run stops it."""
    stdin = stdin or sys.stdin
    interactive = stdin is sys.stdin and stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and arrow-key history for input()
        except ImportError:  # pragma: no cover - not on every platform
            pass
    while True:
        try:
            line = input(PROMPT) if interactive else _read(stdin, session)
        except EOFError:
            session.say()
            return 0
        except KeyboardInterrupt:
            session.say("\n(Ctrl-D or /quit leaves)")
            continue
        try:
            if not session.handle(line):
                return 0
        except KeyboardInterrupt:
            session.say("\ninterrupted")


def _read(stdin: TextIO, session: ChatSession) -> str:
    """A line from a pipe or file, echoed after the prompt so the transcript reads like a terminal's."""
    line = stdin.readline()
    if not line:
        raise EOFError
    session.out.write(PROMPT + line if line.endswith("\n") else PROMPT + line + "\n")
    session.out.flush()
    return line


def add_parser(subparsers: Any) -> None:
    """Register `reasonrag chat` with the shared agent options (backtracking on by default here)."""
    p = subparsers.add_parser(
        "chat",
        help="the interactive, self-correcting agent (sessions saved; resume with --session ID)",
        description="Ask questions one per line and watch each step stream with its stage and PRM score; "
        "the agent backtracks on its own when the path score falls below --threshold and says why. "
        "Commands start with / (/help lists them): /steps, /evidence, /reject N, /back N, /continue, "
        "/history, /quit. Ctrl-D leaves too. Sessions persist in SQLite; --session ID resumes one.",
    )
    add_agent_options(p)
    p._option_string_actions["--backtrack"].help = (
        "go back to the last branch point when the path score falls below --threshold "
        "(default in chat: on when a PRM is loaded; --no-backtrack keeps /reject)"
    )
    p.add_argument("--session", default=None, help="resume this session (or start one under this id)")
    p.add_argument(
        "--db",
        default=None,
        help="SQLite file of the sessions (default: $REASONRAG_CACHE or ~/.cache/reasonrag, /chat.sqlite)",
    )
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from reasonrag.agent.graph import agent_steps
    from reasonrag.agent.nodes import BacktrackConfig
    from reasonrag.data.corpus import Corpus
    from reasonrag.prm.base import score_candidates, step_scorer
    from reasonrag.retrieval.index import default_cache_dir

    if args.best_of != 1 or args.beam > 1:
        raise InputError(
            "chat follows one trajectory at a time: --best-of and --beam are for ask and eval "
            "(--critic N works here)"
        )
    check_search_options(args)
    if args.session is not None and not args.session.strip():
        raise InputError("--session needs an id, e.g. --session 3f2a9c1d")
    check_agent_options(args)
    print(f"loading the agent (corpus {args.corpus})...", file=sys.stderr, flush=True)
    corpus = Corpus.load(args.corpus)
    prm = load_agent_prm(args)
    if args.backtrack and prm is None:
        raise InputError("--backtrack needs step scores: drop --no-prm, or give --prm DIR")
    backtrack = None
    if prm is not None:  # branch points are kept even with --no-backtrack, so /reject works
        backtrack = BacktrackConfig(
            threshold=args.threshold,
            max_backtracks=0 if args.backtrack is False else args.max_backtracks,
            aggregation=args.aggregation,
            stages=args.backtrack_stages,
        )
    nodes = agent_steps(
        retriever=make_retriever(args, corpus),
        policy=make_policy(args),
        max_hops=args.max_hops,
        k=args.k,
        scorer=step_scorer(prm) if prm is not None else None,
        backtrack=backtrack,
        critic=args.critic,
        critic_stages=tuple(args.critic_stages),
        stop_threshold=stop_threshold_of(args, prm),
        batch_scorer=(lambda state, steps: score_candidates(prm, state, steps)) if prm is not None else None,
    )
    db = Path(args.db) if args.db else default_cache_dir() / "chat.sqlite"
    inputs = {"mode": "sample" if args.sample else "greedy", "seed": args.seed}
    with ChatSession(nodes, db, args.session, inputs=inputs) as session:
        session.say(session.banner())
        if session.resumed:
            session.say(session.history_text())
        return repl(session)

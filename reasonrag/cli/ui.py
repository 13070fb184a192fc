"""`reasonrag ui`: a local web page to ask the agent, watch and reject its scored steps, and browse predictions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reasonrag.cli.checks import check_agent_options
from reasonrag.cli.options import add_agent_options, build_agent_from_args
from reasonrag.errors import InputError, MissingDependencyError


def cmd_ui(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must lie in 0..65535, got {args.port}")
    try:  # before any model loads: a missing extra is one line, at once
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from reasonrag.web.app import INSTALL_UI

        raise MissingDependencyError(f"`reasonrag ui` needs FastAPI and uvicorn: {INSTALL_UI}") from None
    check_agent_options(args)
    from langgraph.checkpoint.memory import InMemorySaver

    from reasonrag.agent.state import MAX_BACKTRACKS_BOUND, recursion_limit
    from reasonrag.retrieval.server import listen, run_app
    from reasonrag.web.app import make_ui_app

    sock = listen(args.host, args.port)  # a taken port is a one-line error before the index loads
    print(f"loading the agent (corpus {args.corpus})...", file=sys.stderr, flush=True)
    corpus, graph = build_agent_from_args(
        args, concurrent=True, branch_points=True, checkpointer=InMemorySaver()
    )
    info = {"corpus": corpus.name, "scored": not args.no_prm, "max_hops": args.max_hops, "k": args.k}
    app = make_ui_app(graph, info=info, recursion_limit=recursion_limit(args.max_hops, MAX_BACKTRACKS_BOUND))
    host, port = sock.getsockname()[:2]
    print(f"reasonrag: the page is at http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    run_app(app, sock)
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag ui`."""
    p = sub.add_parser(
        "ui",
        help="a local web page: ask, watch the scored steps, reject one, browse and compare predictions",
        description="Serve a web page on this machine: ask a question and watch each step arrive with its "
        "stage, action, evidence and PRM score, the backtracks and the critic's alternatives; reject a step "
        "and watch the agent go back; open `reasonrag eval --predictions` files to browse their questions "
        "(wrong ones first, by corpus, stage and score) and compare two side by side. Offline: every asset "
        'ships in the package. Needs pip install "reasonrag[serve]".',
    )
    add_agent_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8600, help="port to listen on (default: 8600; 0 picks a free one)"
    )
    p.set_defaults(func=cmd_ui)

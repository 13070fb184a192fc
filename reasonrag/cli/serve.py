"""`reasonrag serve`: one corpus's index behind Search-R1's `POST /retrieve`, for many agents and workers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reasonrag.cli.options import DEFAULT_CORPUS, add_lexical_option
from reasonrag.errors import InputError, MissingDependencyError


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must lie in 0..65535, got {args.port}")
    if not 1 <= args.k <= 1000:
        raise InputError(f"-k must lie in 1..1000, got {args.k}")
    try:  # before any model loads: a missing extra is one line, at once
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from reasonrag.retrieval.server import INSTALL_SERVE

        raise MissingDependencyError(
            f"`reasonrag serve` needs FastAPI and uvicorn: {INSTALL_SERVE}"
        ) from None
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.retriever import DenseRetriever
    from reasonrag.retrieval.server import listen, serve

    sock = listen(args.host, args.port)  # a taken port is a one-line error before the index loads
    corpus = Corpus.load(args.corpus)
    retriever = DenseRetriever(corpus, args.encoder, k=args.k, lexical_weight=args.lexical_weight)
    host, port = sock.getsockname()[:2]  # the port the system chose for --port 0
    print(
        f"reasonrag: serving {corpus.name} ({len(corpus.passages)} passages, {retriever.index.kind} index) "
        f"at http://{host}:{port}/retrieve (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    serve(retriever, name=corpus.name, batch=not args.no_batch, sock=sock)
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag serve`."""
    p = sub.add_parser(
        "serve",
        help="serve a corpus's index over HTTP (Search-R1's POST /retrieve)",
        description='Serve the retrieval index of a corpus: POST /retrieve {"queries": [...], "topk": k, '
        '"return_scores": true} returns, per query, its documents ({"id", "contents", "title", "text", '
        '"sentences"}) and scores; GET /health says what is served. Agents use it with '
        '--retriever-url, Python with RemoteRetriever(url=...). Needs pip install "reasonrag[serve]".',
    )
    p.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help="shipped corpus name or path to a FlashRAG JSONL corpus"
    )
    p.add_argument("--encoder", default=None, help="sentence-transformers name or path")
    add_lexical_option(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)"
    )
    p.add_argument(
        "-k", "--k", type=int, default=3, help="documents per query when a request gives no topk (default: 3)"
    )
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="search each request alone; by default the queries of concurrent requests are searched "
        "together, one encoder pass and one index search a batch",
    )
    p.set_defaults(func=cmd_serve)

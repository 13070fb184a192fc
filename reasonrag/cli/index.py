"""`reasonrag index`: build or reuse the retrieval index of a corpus."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from reasonrag.cli.options import DEFAULT_CORPUS


def cmd_index(args: argparse.Namespace) -> int:
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.index import open_index

    corpus = Corpus.load(args.corpus)
    t0 = time.perf_counter()
    index = open_index(
        corpus, args.encoder, rebuild="always" if args.rebuild else "auto", show_progress=not args.json
    )
    info = {
        "corpus": corpus.name,
        "passages": len(corpus.passages),
        "path": str(index.path),
        "kind": index.manifest.get("kind"),
        "dim": index.manifest.get("dim"),
        "encoder": index.manifest.get("encoder", {}).get("name"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"index for {info['corpus']}: {info['passages']} passages, {info['kind']} search, dim {info['dim']}"
        )
        print(f"  at {info['path']} ({info['seconds']}s)")
    return 0


def add_parser(sub: Any) -> None:
    """Register `reasonrag index`."""
    p = sub.add_parser(
        "index",
        help="build (or reuse) the retrieval index of a corpus",
        description="Build the dense retrieval index of a corpus, or check and reuse a saved one.",
    )
    p.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help="shipped corpus name or path to a FlashRAG JSONL corpus"
    )
    p.add_argument("--encoder", default=None, help="sentence-transformers name or path")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if a valid index exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_index)

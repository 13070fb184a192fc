"""What searching through `reasonrag serve` costs next to searching the same index in process.

    python benchmarks/serve_cost.py --corpus hotpotqa --queries 200 --out benchmarks/results/serve_cost.json

A real uvicorn server on 127.0.0.1 (in a thread of this process, so both sides share the machine alike)
serves the corpus's index; the same questions are searched one at a time with the local DenseRetriever
and with a RemoteRetriever, alternating query by query so load drifts hit both sides alike, then in
batches of 32 (one request each). Both must return the same passages in the same order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="hotpotqa")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import uvicorn

    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.remote import RemoteRetriever
    from reasonrag.retrieval.retriever import DenseRetriever
    from reasonrag.retrieval.server import make_app

    load_before = os.getloadavg()
    corpus = Corpus.load(args.corpus)
    local = DenseRetriever(corpus, k=args.k)
    questions = [q.question for q in corpus.questions("dev")][: args.queries]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(make_app(local, name=corpus.name), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    remote = RemoteRetriever(url=f"http://127.0.0.1:{sock.getsockname()[1]}", k=args.k)
    remote.search(questions[0])  # connect once
    local.search(questions[0])

    one = {"local": [], "remote": []}
    same = True
    for q in questions:
        for side, retriever in (("local", local), ("remote", remote)):
            t0 = time.perf_counter()
            hits = retriever.search(q, k=args.k)
            one[side].append(time.perf_counter() - t0)
            if side == "local":
                want = [h.passage.id for h in hits]
            else:
                same &= [h.passage.id for h in hits] == want
    batches = {"local": [], "remote": []}
    for start in range(0, len(questions), 32):
        chunk = questions[start : start + 32]
        for side, retriever in (("local", local), ("remote", remote)):
            t0 = time.perf_counter()
            retriever.search_batch(chunk, k=args.k)
            batches[side].append((time.perf_counter() - t0) / len(chunk))
    server.should_exit = True

    def ms(values: list[float], q: int) -> float:
        return round(1000 * statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)

    result = {
        "benchmark": "serve_cost",
        "command": "python benchmarks/serve_cost.py " + " ".join(sys.argv[1:]),
        "corpus": corpus.name,
        "passages": len(corpus.passages),
        "index_kind": local.index.kind,
        "queries": len(questions),
        "k": args.k,
        "same_results": same,
        "one_query": {side: {"p50_ms": ms(v, 50), "p95_ms": ms(v, 95)} for side, v in one.items()},
        "batch_of_32_per_query": {side: {"p50_ms": ms(v, 50)} for side, v in batches.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    }
    result["one_query"]["added_p50_ms"] = round(
        result["one_query"]["remote"]["p50_ms"] - result["one_query"]["local"]["p50_ms"], 2
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a served query's CPU goes: the encoder, the index search, and the app around them.

    python benchmarks/serve_cpu_split.py --corpus hotpotqa --out benchmarks/results/serve_cpu_split.json

Process CPU time (not wall time) in one process with one torch thread, so the figures are per core:
encoding questions in batches, the FAISS search of the encoded batch, and one-query requests through
the FastAPI app of `reasonrag serve` (in process, no socket) against the same searches made directly;
searches with the default BM25 fusion and dense only (`lexical_weight` 0) side by side.
Two cores encode at most 2000 / (encoder ms) queries a second however the server batches them: the
bound that `benchmarks/serve_load.py` runs against. Run it alone (through ../shared/bin/heavy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_ms_each(fn, n: int) -> float:
    t0 = time.process_time()
    fn()
    return round(1000 * (time.process_time() - t0) / n, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="hotpotqa")
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32, help="queries a search_batch call")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from fastapi.testclient import TestClient

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.retriever import DenseRetriever
    from reasonrag.retrieval.server import make_app

    quiet_libraries()
    torch.set_num_threads(1)
    corpus = Corpus.load(args.corpus)
    retriever = DenseRetriever(corpus, show_progress=False)
    queries = [q.question for q in corpus.questions("dev")][: args.queries]
    n = len(queries)
    retriever.search_batch(queries[:8], k=5)  # warm up (and build the BM25 matrix)
    vectors = retriever.encode(queries)
    client = TestClient(make_app(retriever, batch=True))
    for q in queries[:5]:
        client.post("/retrieve", json={"queries": [q], "topk": 5})
    few = queries[:100]

    def batched() -> None:
        for i in range(0, n, args.batch):
            retriever.search_batch(queries[i : i + args.batch], k=5)

    fused = cpu_ms_each(batched, n)
    weight, retriever.lexical_weight = retriever.lexical_weight, 0.0
    dense = cpu_ms_each(batched, n)
    retriever.lexical_weight = weight
    row = {
        "command": "python benchmarks/serve_cpu_split.py " + " ".join(sys.argv[1:]),
        "corpus": args.corpus,
        "queries": n,
        "load_at_start": round(os.getloadavg()[0], 2),
        "encode_ms_per_query": cpu_ms_each(lambda: retriever.encode(queries), n),
        "faiss_ms_per_query": cpu_ms_each(lambda: retriever.index.search(vectors, 5), n),
        "lexical_weight": weight,
        "search_batch_ms_per_query": fused,
        "search_batch_ms_per_query_dense_only": dense,
        "single_query_search_ms": cpu_ms_each(
            lambda: [retriever.search_batch([q], k=5) for q in few], len(few)
        ),
        "single_query_request_ms": cpu_ms_each(
            lambda: [client.post("/retrieve", json={"queries": [q], "topk": 5}) for q in few], len(few)
        ),
    }
    row["app_ms_per_request"] = round(row["single_query_request_ms"] - row["single_query_search_ms"], 3)
    row["two_core_encoder_bound_queries_per_second"] = round(2000 / row["encode_ms_per_query"], 1)
    print(json.dumps(row, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

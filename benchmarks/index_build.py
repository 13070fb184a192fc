"""Index-build throughput next to plain SentenceTransformer.encode on the same passages.

    python benchmarks/index_build.py --corpus hotpotqa --n 1000 --repeats 3 --out index_build.json

Both sides embed the same `Passage.contents` with the same encoder and batch size; the two are run
alternately (ABAB..., then BABA... order flips each round) so drift in machine load hits both alike.
"index" is `DenseIndex.build` (encode + float16 rounding + FAISS), "save" the atomic write after it.
The point: an index should cost little above the encoder itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from reasonrag.data.corpus import Corpus  # noqa: E402
from reasonrag.retrieval.encoder import load_encoder  # noqa: E402
from reasonrag.retrieval.index import DenseIndex  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="hotpotqa", help="shipped corpus name or path")
    parser.add_argument(
        "--n", type=int, default=1000, help="passages to embed per run (a seeded random sample)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each round runs both sides once")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)

    import torch

    corpus = Corpus.load(args.corpus)
    rng = np.random.default_rng(args.seed)
    n = min(args.n, len(corpus.passages))
    passages = [corpus.passages[i] for i in sorted(rng.choice(len(corpus.passages), n, replace=False))]
    texts = [p.contents for p in passages]
    model = load_encoder(args.encoder)
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up

    def run_encode() -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return time.perf_counter() - started

    save_seconds: list[float] = []

    def run_index() -> float:
        started = time.perf_counter()
        index = DenseIndex.build(
            passages,
            args.encoder,
            corpus_checksum=corpus.checksum(),
            show_progress=False,
            batch_size=args.batch_size,
        )
        elapsed = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            saved = time.perf_counter()
            index.save(Path(tmp) / "index")
            save_seconds.append(time.perf_counter() - saved)
        return elapsed

    times: dict[str, list[float]] = {"encode": [], "index": []}
    for round_ in range(args.repeats):
        order = ["encode", "index"] if round_ % 2 == 0 else ["index", "encode"]
        for side in order:
            seconds = run_encode() if side == "encode" else run_index()
            times[side].append(seconds)
            print(
                f"round {round_ + 1}: {side:<6} {n / seconds:7.1f} passages/s ({seconds:.2f} s)",
                file=sys.stderr,
            )

    encode_s, index_s = statistics.median(times["encode"]), statistics.median(times["index"])
    result = {
        "corpus": corpus.name,
        "n": n,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "encode_passages_per_s": round(n / encode_s, 2),
        "index_passages_per_s": round(n / index_s, 2),
        "ratio_index_over_encode": round((n / index_s) / (n / encode_s), 4),
        "index_overhead_pct": round(100 * (index_s / encode_s - 1), 2),
        "save_seconds_median": round(statistics.median(save_seconds), 4),
        "encode_seconds": [round(s, 3) for s in times["encode"]],
        "index_seconds": [round(s, 3) for s in times["index"]],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(
        f"encode {result['encode_passages_per_s']} passages/s | index {result['index_passages_per_s']} passages/s | "
        f"index/encode {result['ratio_index_over_encode']} (overhead {result['index_overhead_pct']}%)",
        file=sys.stderr,
    )
    print(json.dumps(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

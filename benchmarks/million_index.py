"""A million-passage index: streamed build, peak memory, size on disk, recall@10 against exact search, query latency.

    python benchmarks/million_index.py --n 1000000 --out benchmarks/results/million_index.json

Vectors are derived from real ones, so no passage is encoded: each of the N vectors is a real passage
embedding of the shipped corpora (their prebuilt `index/embeddings.npy`, 26,922 all-MiniLM-L6-v2
vectors) plus half another random passage's embedding plus Gaussian noise, normalised; they keep the
clustered shape of real embeddings (purely random vectors have none, and no index does well on them).
Queries are real: the encoded questions of the shipped corpora. Exact search is a brute-force scan of
the same float16 vectors the index stores.

Each build runs in its own child process, so its peak resident memory (ru_maxrss) is the build's alone:
the streamed build of `reasonrag.retrieval.large_index` (vectors written to disk chunk by chunk, IVF
trained on a sample, added in batches). Each query sweep runs in another child (load, then one query at
a time, k=10) over nprobe x oversample, reporting recall@10 and p50/p95 latency per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CORPORA = ("hotpotqa", "2wikimultihopqa", "musique")
CHUNK = 65_536


def peak_mb() -> float:
    """This process's peak resident memory: VmHWM, which (unlike ru_maxrss) starts afresh at exec, so a
    child's figure is its own and not its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def base_vectors() -> np.ndarray:
    parts = [np.load(ROOT / "corpora" / name / "index" / "embeddings.npy") for name in CORPORA]
    return np.concatenate(parts).astype(np.float32)


def derived_chunk(base: np.ndarray, seed: int, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the derived vectors: a function of (seed, start) only, so any run makes the same."""
    rng = np.random.default_rng([seed, start])
    m, dim = stop - start, base.shape[1]
    first, second = rng.integers(0, len(base), m), rng.integers(0, len(base), m)
    noise = rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
    v = base[first] + 0.5 * base[second] + 0.5 * noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def phase_build(args: argparse.Namespace) -> dict:
    from reasonrag.retrieval.large_index import build_compressed

    base = base_vectors()
    chunks = (derived_chunk(base, args.seed, s, min(args.n, s + CHUNK)) for s in range(0, args.n, CHUNK))
    target = Path(args.workdir) / args.kind
    t0 = time.perf_counter()
    build_compressed(
        chunks,
        args.n,
        base.shape[1],
        target,
        {"encoder": {"name": "derived"}, "corpus_checksum": "derived"},
        kind=args.kind,
        seed=args.seed,
        show_progress=False,
    )
    seconds = time.perf_counter() - t0
    manifest = json.loads((target / "manifest.json").read_text())
    sizes = {name: (target / name).stat().st_size for name in ("embeddings.npy", "faiss.index")}
    return {
        "kind": args.kind,
        "build_seconds": round(seconds, 1),
        "peak_rss_mb": peak_mb(),
        "nlist": manifest["nlist"],
        "train_size": manifest["train_size"],
        "bytes": sizes,
        "disk_mb": round(sum(sizes.values()) / 2**20, 1),
    }


def exact_top10(path: Path, queries: np.ndarray) -> np.ndarray:
    """Brute-force top 10 over the stored float16 rows, read a chunk at a time (never all in memory)."""
    rows = np.load(path, mmap_mode="r")
    step = 16_384
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, len(rows), step):
        block = np.array(rows[start : start + step], dtype=np.float32)
        scores = queries @ block.T
        top = np.argpartition(-scores, 9, axis=1)[:, :10]
        s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :10]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i


def phase_query(args: argparse.Namespace) -> dict:
    from reasonrag.retrieval.index import DenseIndex

    queries = np.load(Path(args.workdir) / "queries.npy")
    truth = np.load(Path(args.workdir) / "truth.npy")
    t0 = time.perf_counter()
    index = DenseIndex.load(Path(args.workdir) / args.kind)
    load_seconds = time.perf_counter() - t0
    sweep = []
    settings = [(index.nprobe, index.oversample)]  # the defaults the build chose come first
    settings += [(p, o) for p in args.nprobe for o in args.oversample if (p, o) != settings[0]]
    for nprobe, oversample in settings:
        index.nprobe = nprobe
        index.manifest["oversample"] = oversample
        latencies, hits = [], 0
        for q, gold in zip(queries, truth):
            t = time.perf_counter()
            _, rows = index.search(q[None, :], 10)
            latencies.append(time.perf_counter() - t)
            hits += len(set(rows[0].tolist()) & set(gold.tolist()))
        sweep.append(
            {
                "nprobe": nprobe,
                "oversample": oversample,
                "default": not sweep,
                "recall_at_10": round(hits / (10 * len(queries)), 4),
                "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
                "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
            }
        )
        print(json.dumps({"kind": args.kind, **sweep[-1]}), file=sys.stderr, flush=True)
    return {
        "kind": args.kind,
        "load_seconds": round(load_seconds, 2),
        "peak_rss_mb": peak_mb(),
        "sweep": sweep,
    }


def encode_queries(limit: int, seed: int) -> np.ndarray:
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.encoder import encode, load_encoder

    texts = [q.question for name in CORPORA for q in Corpus.load(name).questions()]
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in sorted(rng.choice(len(texts), min(limit, len(texts)), replace=False))]
    return encode(picked, load_encoder()).astype(np.float32)


def child(phase: str, args: argparse.Namespace, kind: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--kind", kind, "--n", str(args.n)]
    cmd += ["--workdir", args.workdir, "--seed", str(args.seed)]
    cmd += ["--nprobe", *map(str, args.nprobe), "--oversample", *map(str, args.oversample)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--kinds", nargs="+", default=["ivf_sq8", "ivf_pq"])
    ap.add_argument("--queries", type=int, default=1000, help="questions used as queries")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--oversample", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the indexes are built (default: a temporary dir)")
    ap.add_argument("--out", default=None, help="write the results here (JSON)")
    ap.add_argument("--phase", choices=["build", "query"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        print(json.dumps((phase_build if args.phase == "build" else phase_query)(args)))
        return 0

    temporary = args.workdir is None
    if temporary:
        args.workdir = tempfile.mkdtemp(prefix="reasonrag-million-")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    np.save(work / "queries.npy", encode_queries(args.queries, args.seed))
    builds, queries = [], []
    for kind in args.kinds:
        builds.append(child("build", args, kind))
        print(json.dumps(builds[-1]), file=sys.stderr, flush=True)
        if not (work / "truth.npy").exists():
            np.save(
                work / "truth.npy", exact_top10(work / kind / "embeddings.npy", np.load(work / "queries.npy"))
            )
        queries.append(child("query", args, kind))
    result = {
        "benchmark": "million_index",
        "command": "python benchmarks/million_index.py " + " ".join(sys.argv[1:]),
        "n": args.n,
        "queries": args.queries,
        "vectors": "derived: a shipped passage embedding + 0.5 x another + Gaussian noise, normalised",
        "builds": builds,
        "query_sweeps": queries,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    }
    if temporary:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

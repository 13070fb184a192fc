"""Indexes of corpora too large to hold in memory: a streamed build and a compressed FAISS index.

At or above `DEFAULT_COMPRESS_THRESHOLD` passages, `open_index` / `build_index` build this way instead of
in memory. Memory stays bounded by one chunk of vectors, the training sample and the compressed codes:

1. **Encode in checkpointed chunks**, in corpus order. Each chunk is saved to the work directory
   `<target>.partial/` as it finishes (the resumable build of `reasonrag.retrieval.index`), and written
   into `embeddings.npy` (float16) at its rows. A killed build resumes at the first missing chunk.
2. **Train** the coarse quantizer (k-means, about sqrt(n) lists) and the codec on a random sample of
   rows, collected while the chunks stream past.
3. **Add** every vector, a batch at a time, read back from `embeddings.npy`.

The compressed index is `ivf_sq8` (8-bit scalar quantizer: a byte per dimension, 384 MB a million
384-d vectors) or, past `DEFAULT_PQ_THRESHOLD` passages, `ivf_pq` (product quantizer: `pq_m` bytes a
vector). Searching proposes `k * oversample` candidates from the codes and re-ranks them exactly against
`embeddings.npy`, memory-mapped, so only the rows a query touches are read. The directory has the same
layout and manifest as any index (`kind` says which), saved atomically with the sha256 of every file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from reasonrag.errors import InputError
from reasonrag.retrieval.index_files import (
    EMBEDDINGS,
    FAISS_FILE,
    FORMAT,
    MANIFEST,
    Checkpoint,
    file_record,
    fsync_dir,
    fsync_file,
    recover,
    remove_stale_temps,
    swap_into_place,
    texts_sha256,
)

COMPRESSED_KINDS = ("ivf_sq8", "ivf_pq")
DEFAULT_COMPRESS_THRESHOLD = 250_000  # below: exact search, or IVF over vectors held in memory
DEFAULT_PQ_THRESHOLD = 4_000_000  # from here on 8-bit codes pass 1.5 GB (384-d): product quantization
DEFAULT_LARGE_NPROBE = 128  # recall@10 0.98 of exact search at 1M (benchmarks/results/million_index.json)
DEFAULT_LARGE_OVERSAMPLE = {"ivf_sq8": 4, "ivf_pq": 32}  # candidates re-ranked per result wanted
DEFAULT_PQ_M = 48
STREAM_CHUNK = 16_384  # passages per checkpointed chunk of a streamed build
ADD_BATCH = 65_536  # vectors per FAISS add
STREAMED_PARTIAL_FORMAT = 2  # chunks in corpus order (format 1: longest-first, in-memory builds)


def choose_kind(count: int, pq_threshold: int = DEFAULT_PQ_THRESHOLD) -> str:
    """The compressed kind for `count` vectors: 8-bit scalar codes, product codes past `pq_threshold`."""
    return "ivf_pq" if count >= pq_threshold else "ivf_sq8"


def choose_large_nlist(count: int) -> int:
    """About sqrt(n) inverted lists (at least 39 training points each, FAISS's minimum)."""
    return max(1, min(round(math.sqrt(count)), count // 39))


def make_faiss_index(kind: str, dim: int, nlist: int, pq_m: int = DEFAULT_PQ_M) -> faiss.Index:
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    elif kind == "ivf_pq":
        if dim % pq_m:
            raise InputError(f"pq_m must divide the dimension {dim}, got {pq_m}")
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    else:
        raise InputError(f"unknown compressed index kind {kind!r}: use one of {', '.join(COMPRESSED_KINDS)}")
    index.own_fields = True
    quantizer.this.disown()  # the index owns (and frees) its quantizer
    return index


class _RowsFile:
    """`embeddings.npy` written and read with plain file I/O (never mapped), so the pages a build
    streams through stay in the page cache, not in this process's resident memory."""

    def __init__(self, path: Path, count: int, dim: int, dtype: str = "float16") -> None:
        self.path, self.count, self.dim, self.dtype = path, count, dim, np.dtype(dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (count, dim),
        }
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            self.offset = f.tell()
            f.truncate(self.offset + count * dim * self.dtype.itemsize)
        self.row_bytes = dim * self.dtype.itemsize

    def write(self, start: int, vectors: np.ndarray) -> None:
        with open(self.path, "r+b") as f:
            f.seek(self.offset + start * self.row_bytes)
            f.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())

    def read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = f.read((stop - start) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, self.dim)


def build_compressed(
    chunks: Iterable[np.ndarray],
    count: int,
    dim: int,
    target: str | os.PathLike[str],
    manifest: dict[str, Any],
    *,
    kind: str | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    oversample: int | None = None,
    pq_m: int = DEFAULT_PQ_M,
    train_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Stream `count` vectors (normalised, in row order, in chunks of any size) into a compressed index
    saved atomically at `target`; returns `target`. `manifest` holds the identity fields (encoder,
    corpus_checksum, ...); the rest (kind, dim, count, lists, files) is filled in here."""
    from tqdm.auto import tqdm

    kind = kind or choose_kind(count)
    if kind not in COMPRESSED_KINDS:
        raise InputError(f"unknown compressed index kind {kind!r}: use one of {', '.join(COMPRESSED_KINDS)}")
    if count < 39:
        raise InputError(f"a compressed index needs at least 39 vectors, got {count}")
    oversample = DEFAULT_LARGE_OVERSAMPLE[kind] if oversample is None else int(oversample)
    if oversample < 1:
        raise InputError(f"oversample must be >= 1, not {oversample}")
    nlist = choose_large_nlist(count) if nlist is None else max(1, min(int(nlist), count // 39))
    nprobe = min(nlist, DEFAULT_LARGE_NPROBE) if nprobe is None else max(1, min(int(nprobe), nlist))
    train_size = min(count, train_size or max(64 * nlist, 50_000))
    started = time.perf_counter()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    remove_stale_temps(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        rows = _RowsFile(tmp / EMBEDDINGS, count, dim)
        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(count, train_size, replace=False))
        sample = np.empty((train_size, dim), dtype=np.float32)
        taken = written = 0
        with tqdm(total=count, desc="Writing vectors", unit="vec", disable=not show_progress) as bar:
            for chunk in chunks:
                chunk = np.asarray(chunk)
                if chunk.ndim != 2 or chunk.shape[1] != dim:
                    raise InputError(f"a chunk of vectors has shape {chunk.shape}, expected (n, {dim})")
                if written + len(chunk) > count:
                    raise InputError(f"more than the {count} vectors announced")
                rows.write(written, chunk)
                stop = np.searchsorted(sample_rows, written + len(chunk))
                picked = sample_rows[taken:stop] - written
                sample[taken:stop] = chunk[picked].astype(rows.dtype).astype(np.float32)
                taken, written = stop, written + len(chunk)
                bar.update(len(chunk))
        if written != count:
            raise InputError(f"got {written} vectors, {count} were announced")
        index = make_faiss_index(kind, dim, nlist, pq_m)
        index.cp.seed = seed
        if show_progress:
            print(f"reasonrag: training {kind} ({nlist} lists) on {train_size} vectors", file=sys.stderr)
        index.train(sample)
        del sample
        with tqdm(total=count, desc="Adding vectors", unit="vec", disable=not show_progress) as bar:
            for start in range(0, count, ADD_BATCH):
                stop = min(count, start + ADD_BATCH)
                index.add(rows.read(start, stop).astype(np.float32))
                bar.update(stop - start)
        faiss.write_index(index, str(tmp / FAISS_FILE))
        del index
        manifest = {
            **manifest,
            "format": FORMAT,
            "dim": dim,
            "count": count,
            "kind": kind,
            "dtype": "float16",
            "nlist": nlist,
            "nprobe": nprobe,
            "oversample": int(oversample),
            "train_size": int(train_size),
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "faiss_version": faiss.__version__,
            **({"pq_m": pq_m} if kind == "ivf_pq" else {}),
        }
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        manifest["files"] = {name: file_record(tmp / name) for name in (EMBEDDINGS, FAISS_FILE)}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:  # last: it vouches for the others
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        for name in (EMBEDDINGS, FAISS_FILE, MANIFEST):
            fsync_file(tmp / name)
        fsync_dir(tmp)
        swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def encoded_chunks(
    texts: Sequence[str],
    encode_fn: Callable[[list[str]], np.ndarray],
    checkpoint: Checkpoint | None,
    *,
    chunk_size: int = STREAM_CHUNK,
    show_progress: bool = True,
) -> Iterator[np.ndarray]:
    """Each chunk of `texts`' embeddings in corpus order: from the checkpoint when an earlier build
    finished it, else encoded now (longest-first within the chunk) and handed to the checkpoint."""
    from tqdm.auto import tqdm

    chunk_size = checkpoint.chunk_size if checkpoint is not None else chunk_size
    done = checkpoint.done if checkpoint is not None else {}
    resumed = sum(len(v) for v in done.values())
    with tqdm(
        total=len(texts), initial=resumed, desc="Encoding passages", unit="passage", disable=not show_progress
    ) as bar:
        for number, start in enumerate(range(0, len(texts), chunk_size)):
            if number in done:
                yield np.asarray(done[number])
                continue
            part = list(texts[start : start + chunk_size])
            order = np.argsort([-len(t) for t in part], kind="stable")
            encoded = encode_fn([part[i] for i in order])
            vectors = np.empty_like(encoded)
            vectors[order] = encoded
            if checkpoint is not None:
                checkpoint.save(number, vectors)
            bar.update(len(part))
            yield vectors


def streamed_identity(
    texts: Sequence[str], corpus_checksum: str, fingerprint: dict, dim: int, batch_size: int, chunk_size: int
) -> dict:
    """What a streamed build's checkpointed chunks must match to be reused."""
    return {
        "format": STREAMED_PARTIAL_FORMAT,
        "corpus_checksum": corpus_checksum,
        "texts_sha256": texts_sha256(texts),
        "count": len(texts),
        "encoder": fingerprint,
        "dim": dim,
        "dtype": "float16",
        "chunk_size": int(chunk_size),
        "batch_size": int(batch_size),
    }


def build_large(
    corpus: Any,
    target: str | os.PathLike[str],
    encoder_name: str | os.PathLike[str] | None = None,
    *,
    resume_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    batch_size: int = 64,
    checkpoint_every: int = STREAM_CHUNK,
    exact_threshold: int | None = None,
    **options: Any,
) -> Path:
    """Encode `corpus` chunk by chunk (resumable through `resume_dir`) into a compressed index at `target`.

    `options` go to `build_compressed` (kind, nlist, nprobe, oversample, pq_m, train_size, seed)."""
    from reasonrag.retrieval.encoder import encode, encoder_fingerprint, load_encoder

    unknown = set(options) - {"kind", "nlist", "nprobe", "oversample", "pq_m", "train_size", "seed", "dtype"}
    if unknown:
        raise InputError(f"unknown option(s) for a large index build: {', '.join(sorted(unknown))}")
    if options.pop("dtype", "float16") != "float16":
        raise InputError("a compressed index stores its vectors as float16")
    fingerprint = encoder_fingerprint(encoder_name)
    encoder = load_encoder(encoder_name)
    dim = encoder.get_embedding_dimension()
    texts = [p.contents for p in corpus.passages]
    checksum = corpus.checksum()
    checkpoint = None
    if resume_dir is not None:
        identity = streamed_identity(texts, checksum, fingerprint, dim, batch_size, checkpoint_every)
        checkpoint = Checkpoint.open(Path(resume_dir), identity)
    chunks = encoded_chunks(
        texts,
        lambda part: encode(part, encoder, batch_size=batch_size),
        checkpoint,
        chunk_size=checkpoint_every,
        show_progress=show_progress,
    )
    manifest = {"encoder": {**fingerprint, "dim": dim}, "corpus_checksum": checksum}
    if exact_threshold is not None:
        manifest["exact_threshold"] = int(exact_threshold)
    build_compressed(chunks, len(texts), dim, target, manifest, show_progress=show_progress, **options)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return Path(target)

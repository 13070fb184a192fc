"""A dense index of a corpus: normalised passage embeddings plus a FAISS inner-product index over them.

Small corpora get exact search (`IndexFlatIP`); past a size threshold an `IndexIVFFlat` proposes
`k * oversample` candidates that are re-ranked exactly against the stored embeddings.

On disk an index is a directory with no pickle in it:

    manifest.json    format, encoder fingerprint, dim, count, corpus checksum, kind, dtype, file hashes...
    embeddings.npy   the passage embeddings (float16 by default), row i = passage i of the corpus
    faiss.index      the trained IVF index (kind "ivf" only; a flat index is rebuilt from the embeddings)

Saving writes a temporary directory beside the target, fsyncs it and renames it into place, so an
interrupted save never leaves a half-written index and never destroys the previous one.

Builds that save (`open_index`, `build_index`) are resumable. While encoding they checkpoint the
embeddings, a chunk of `checkpoint_every` passages at a time, into a work directory beside the target:

    <target>.partial/
        partial.json         corpus checksum and text hash, encoder fingerprint, dtype, chunk and batch
                             size, passage count, and the sha256 of every finished chunk
        chunk-000000.npy     the embeddings (in the index's dtype) of one chunk of passages
        ...

Each chunk is written to a temporary file, fsynced and renamed into place, then recorded in
partial.json (itself replaced atomically). A build interrupted by a crash or Ctrl-C leaves the previous
index untouched and the finished chunks on disk; the next build of the same corpus with the same encoder
and settings into the same target reuses them and encodes only the rest. Chunks made for anything else
are discarded, with a line on stderr saying why. The work directory is deleted once the finished index
is saved.

Two processes that build the same index take turns on a lock file beside it (`.<name>.lock`): the second
waits for the first and then reuses its index instead of building over the same work directory.
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np

from reasonrag.data.types import Passage
from reasonrag.errors import InputError, InvalidIndexError
from reasonrag.retrieval.encoder import encode, encoder_fingerprint, load_encoder, same_encoder
from reasonrag.retrieval.index_files import (
    EMBEDDINGS,
    FAISS_FILE,
    FORMAT,
    MANIFEST,
    PARTIAL_FORMAT,
    Checkpoint,
    backups,
    build_lock,
    cache_path,
    default_cache_dir,  # noqa: F401 - re-exported: where indexes (and chat sessions) are cached
    describe_encoder,
    file_record,
    fsync_dir,
    fsync_file,
    partial_dir,
    recover,
    remove_stale_temps,
    sha256_of_file,
    swap_into_place,
    texts_sha256,
)
from reasonrag.retrieval.large_index import COMPRESSED_KINDS, DEFAULT_COMPRESS_THRESHOLD, build_large

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EXACT_THRESHOLD = 100_000
DEFAULT_OVERSAMPLE = 4
DEFAULT_NPROBE = 16
_ENCODE_CHUNK_BATCHES = 4  # batches per encoder call: the progress bar moves once per call
DEFAULT_CHECKPOINT_EVERY = 4096  # passages per checkpointed chunk of a resumable build

Rebuild = Literal["auto", "never", "always"]


class DenseIndex:
    """Normalised embeddings of a corpus's passages and a FAISS index for inner-product search."""

    def __init__(
        self,
        embeddings: np.ndarray,
        manifest: dict[str, Any],
        *,
        faiss_index: faiss.Index | None = None,
        path: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.path = path
        # a compressed index keeps its float16 rows memory-mapped; the others hold float32 rows in memory
        compressed = self.kind in COMPRESSED_KINDS
        self.embeddings = embeddings if compressed else np.ascontiguousarray(embeddings, dtype=np.float32)
        if self.kind != "flat":
            if faiss_index is None:
                raise InvalidIndexError("an IVF index needs its trained faiss index")
            self._faiss = faiss_index
            self._faiss.nprobe = self.nprobe
        else:
            self._faiss = faiss.IndexFlatIP(self.dim)
            self._faiss.add(self.embeddings)

    # --- what it is -----------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def encoder(self) -> dict[str, Any]:
        """The fingerprint of the encoder that made the embeddings."""
        return self.manifest["encoder"]

    @property
    def corpus_checksum(self) -> str:
        return self.manifest["corpus_checksum"]

    @property
    def nprobe(self) -> int:
        return int(self.manifest.get("nprobe", 1))

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.manifest["nprobe"] = int(value)
        if self.kind != "flat":
            self._faiss.nprobe = int(value)

    @property
    def oversample(self) -> int:
        return int(self.manifest.get("oversample", DEFAULT_OVERSAMPLE))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"DenseIndex(kind={self.kind!r}, count={self.count}, dim={self.dim}, encoder={self.encoder['name']!r}{where})"

    # --- building -------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        encoder_name: str | os.PathLike[str] | None = None,
        *,
        corpus_checksum: str,
        show_progress: bool = True,
        batch_size: int = 64,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        nlist: int | None = None,
        nprobe: int | None = None,
        oversample: int = DEFAULT_OVERSAMPLE,
        dtype: Literal["float16", "float32"] = "float16",
        seed: int = 0,
        resume_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    ) -> DenseIndex:
        """Encode `Passage.contents` of every passage and index the vectors.

        Exact search below `exact_threshold` passages, IVF (nlist ~ 4*sqrt(n)) with exact re-ranking of
        `k * oversample` candidates at or above it. The in-memory embeddings are rounded through `dtype`,
        so a freshly built index answers exactly like the same index saved and loaded again.

        With `resume_dir`, the embeddings are checkpointed there every `checkpoint_every` passages, and
        the chunks a previous, interrupted build of the same passages (same `corpus_checksum`, encoder,
        dtype, batch size and `checkpoint_every`) left there are reused rather than encoded again. The
        caller deletes `resume_dir` once the index is saved (`open_index` and `build_index` do).
        """
        if dtype not in ("float16", "float32"):
            raise InputError(f"dtype must be 'float16' or 'float32', not {dtype!r}")
        if oversample < 1:
            raise InputError(f"oversample must be >= 1, not {oversample}")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, not {batch_size}")
        if checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1, not {checkpoint_every}")
        if not passages:
            raise InputError("cannot build an index of an empty corpus")
        fingerprint = encoder_fingerprint(encoder_name)
        encoder = load_encoder(encoder_name)
        started = time.perf_counter()
        texts = [p.contents for p in passages]
        checkpoint = None
        if resume_dir is not None:
            identity = {
                "format": PARTIAL_FORMAT,
                "corpus_checksum": corpus_checksum,
                "texts_sha256": texts_sha256(texts),
                "count": len(texts),
                "encoder": fingerprint,
                "dim": encoder.get_embedding_dimension(),
                "dtype": dtype,
                "chunk_size": int(checkpoint_every),
                "batch_size": int(batch_size),
            }
            checkpoint = Checkpoint.open(Path(resume_dir), identity)
        vectors = _encode_sorted(texts, encoder, batch_size, show_progress, checkpoint)
        vectors = vectors.astype(dtype).astype(np.float32)
        n, dim = vectors.shape
        if fingerprint.get("dim") is not None and fingerprint["dim"] != dim:
            raise InvalidIndexError(
                f"encoder {fingerprint['name']!r} made {dim}-d vectors, expected {fingerprint['dim']}"
            )
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "encoder": {**fingerprint, "dim": dim},
            "dim": dim,
            "count": n,
            "corpus_checksum": corpus_checksum,
            "kind": "flat",
            "dtype": dtype,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "exact_threshold": int(exact_threshold),
            "faiss_version": faiss.__version__,
        }
        faiss_index = None
        if n >= exact_threshold:
            nlist = _choose_nlist(n) if nlist is None else max(1, min(int(nlist), n))
            nprobe = min(nlist, DEFAULT_NPROBE) if nprobe is None else max(1, min(int(nprobe), nlist))
            faiss_index = _train_ivf(vectors, nlist, seed)
            manifest.update(kind="ivf", nlist=nlist, nprobe=nprobe, oversample=int(oversample))
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        return cls(vectors, manifest, faiss_index=faiss_index)

    # --- searching ------------------------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner-product search for a batch of normalised query vectors.

        Returns (scores, indices), each (n_queries, min(k, count)), best first; indices are row numbers
        of the corpus's passages.
        """
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InputError(f"query vectors have dimension {queries.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise InputError(f"k must be >= 1, not {k}")
        k = min(int(k), self.count)
        if self.kind == "flat":
            scores, indices = self._faiss.search(queries, k)
            return scores, indices.astype(np.int64)
        return self._search_ivf(queries, k)

    def _search_ivf(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_candidates = min(self.count, k * self.oversample)
        _, candidates = self._faiss.search(queries, n_candidates)
        scores = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for row, (query, cand) in enumerate(zip(queries, candidates, strict=True)):
            cand = cand[cand >= 0]
            if len(cand) < k:  # the probed lists held too few vectors: fall back to exact search
                cand = np.arange(self.count)
            exact = self.embeddings[cand].astype(np.float32, copy=False) @ query
            top = np.argpartition(-exact, k - 1)[:k] if len(cand) > k else np.arange(len(cand))
            top = top[np.lexsort((cand[top], -exact[top]))]  # best first, ties by row number
            scores[row], indices[row] = exact[top], cand[top]
        return scores, indices

    # --- checking -------------------------------------------------------------------------------------

    def validate(
        self, corpus_checksum: str, fingerprint: dict[str, Any], *, count: int | None = None
    ) -> str | None:
        """None when this index fits the corpus and encoder, else a human-readable reason it is stale."""
        if self.corpus_checksum != corpus_checksum:
            return (
                f"the corpus changed (index built for corpus sha256 {self.corpus_checksum[:12]}, "
                f"the corpus is now {corpus_checksum[:12]})"
            )
        if not same_encoder(self.encoder, fingerprint):
            return (
                f"the encoder changed (index built with {describe_encoder(self.encoder)}, "
                f"now using {describe_encoder(fingerprint)})"
            )
        if count is not None and count != self.count:
            return f"the index holds {self.count} passages, the corpus {count}"
        return None

    # --- saving and loading ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to `directory` atomically, replacing any index already there."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        recover(target)
        remove_stale_temps(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            manifest = dict(self.manifest)
            files: dict[str, dict[str, Any]] = {}
            stored = self.embeddings.astype(manifest["dtype"], copy=False)
            with open(tmp / EMBEDDINGS, "wb") as f:
                np.save(f, stored, allow_pickle=False)
            files[EMBEDDINGS] = file_record(tmp / EMBEDDINGS)
            if self.kind != "flat":
                faiss.write_index(self._faiss, str(tmp / FAISS_FILE))
                files[FAISS_FILE] = file_record(tmp / FAISS_FILE)
            manifest["files"] = files
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:  # last: it vouches for the others
                json.dump(manifest, f, indent=2, sort_keys=True)
                f.write("\n")
            for name in [*files, MANIFEST]:
                fsync_file(tmp / name)
            fsync_dir(tmp)
            swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        self.path = target
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, verify: bool = True) -> DenseIndex:
        """Read an index written by `save`; InvalidIndexError names the file when anything is off.

        With `verify`, the sha256 of every data file is checked against the manifest.
        """
        path = Path(directory)
        recover(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise InvalidIndexError(f"no index at {path}: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidIndexError(f"{manifest_path} is unreadable: {exc}") from None
        if not isinstance(manifest, dict):
            raise InvalidIndexError(f"{manifest_path} is not a JSON object")
        if manifest.get("format") != FORMAT:
            raise InvalidIndexError(
                f"{manifest_path} has format {manifest.get('format')!r}; this reasonrag reads format {FORMAT}"
            )
        missing = [
            key
            for key in ("encoder", "dim", "count", "corpus_checksum", "kind", "dtype")
            if key not in manifest
        ]
        if missing:
            raise InvalidIndexError(f"{manifest_path} lacks {', '.join(missing)}")
        if manifest["kind"] not in ("flat", "ivf", *COMPRESSED_KINDS):
            raise InvalidIndexError(f"{manifest_path}: unknown kind {manifest['kind']!r}")
        files = manifest.get("files") or {}
        needed = [EMBEDDINGS] + ([FAISS_FILE] if manifest["kind"] != "flat" else [])
        for name in needed:
            file = path / name
            if not file.is_file():
                raise InvalidIndexError(f"{file} is missing")
            record = files.get(name)
            if record is None:
                raise InvalidIndexError(f"{manifest_path} does not list {name}")
            if file.stat().st_size != record.get("bytes"):
                raise InvalidIndexError(
                    f"{file} has {file.stat().st_size} bytes, the manifest says {record.get('bytes')}"
                )
            if verify and sha256_of_file(file) != record.get("sha256"):
                raise InvalidIndexError(f"{file} does not match the sha256 in {MANIFEST} (corrupted?)")
        try:
            mmap = "r" if manifest["kind"] in COMPRESSED_KINDS else None
            embeddings = np.load(path / EMBEDDINGS, allow_pickle=False, mmap_mode=mmap)
        except (OSError, ValueError) as exc:
            raise InvalidIndexError(f"{path / EMBEDDINGS} is unreadable: {exc}") from None
        expected = (int(manifest["count"]), int(manifest["dim"]))
        if embeddings.shape != expected:
            raise InvalidIndexError(
                f"{path / EMBEDDINGS} has shape {embeddings.shape}, the manifest says {expected}"
            )
        if str(embeddings.dtype) != manifest["dtype"]:
            raise InvalidIndexError(
                f"{path / EMBEDDINGS} holds {embeddings.dtype}, the manifest says {manifest['dtype']}"
            )
        faiss_index = None
        if manifest["kind"] != "flat":
            try:
                faiss_index = faiss.read_index(str(path / FAISS_FILE))
            except RuntimeError as exc:
                raise InvalidIndexError(f"{path / FAISS_FILE} is unreadable: {exc}") from None
            if faiss_index.ntotal != expected[0] or faiss_index.d != expected[1]:
                raise InvalidIndexError(f"{path / FAISS_FILE} does not match {EMBEDDINGS}")
        return cls(embeddings, manifest, faiss_index=faiss_index, path=path)


def check_index_dir(
    directory: str | os.PathLike[str],
    corpus_checksum: str,
    fingerprint: dict[str, Any],
    *,
    count: int | None = None,
) -> tuple[DenseIndex | None, str | None]:
    """Load and validate the index in `directory`: (index, None) when usable, else (None, reason)."""
    try:
        index = DenseIndex.load(directory)
    except InvalidIndexError as exc:
        return None, str(exc)
    reason = index.validate(corpus_checksum, fingerprint, count=count)
    return (None, reason) if reason else (index, None)


def open_index(
    corpus: Any,
    encoder_name: str | os.PathLike[str] | None = None,
    *,
    rebuild: Rebuild = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    **build_options: Any,
) -> DenseIndex:
    """The index of `corpus`: the shipped one when valid, else a cached one, else (maybe) a new build.

    `rebuild="auto"` builds when no valid index exists (saying why on stderr), `"never"` raises
    InvalidIndexError instead, `"always"` builds anew. `build_options` go to DenseIndex.build.
    """
    if rebuild not in ("auto", "never", "always"):
        raise InputError(f"rebuild must be 'auto', 'never' or 'always', not {rebuild!r}")
    fingerprint = encoder_fingerprint(encoder_name)
    checksum = corpus.checksum()
    count = len(corpus.passages)
    cached = cache_path(corpus, fingerprint, cache_dir)
    reason: str | None = None
    if rebuild != "always":
        root = getattr(getattr(corpus, "source", None), "root", None)
        places = ([Path(root) / "index"] if root is not None else []) + [cached]
        for place in places:
            if not (place / MANIFEST).exists() and not backups(place):
                continue
            index, why = check_index_dir(place, checksum, fingerprint, count=count)
            if index is not None:
                return index
            reason = reason or f"{why} [{place}]"
    if rebuild == "never":
        why = reason or "no index has been built for it yet"
        raise InvalidIndexError(
            f"No valid index for corpus {corpus.name!r}: {why}. Build it with: reasonrag index --corpus {corpus.name}"
        )
    if rebuild == "always":
        message = f"rebuilding the index of corpus {corpus.name!r} as asked"
    elif reason:
        message = f"the index of corpus {corpus.name!r} is stale: {reason}; rebuilding it"
    else:
        message = f"no index of corpus {corpus.name!r} yet; building it"
    with build_lock(cached) as waited:
        # Another process may have built it meanwhile (we waited for it, or it finished just before us).
        if rebuild == "auto" or waited:
            index, _ = check_index_dir(cached, checksum, fingerprint, count=count)
            if index is not None:
                return index
        print(f"reasonrag: {message} ({count} passages) into {cached}", file=sys.stderr, flush=True)
        return _build_and_save(corpus, cached, encoder_name, show_progress, build_options)


def build_index(
    corpus: Any,
    out_dir: str | os.PathLike[str],
    encoder_name: str | os.PathLike[str] | None = None,
    *,
    show_progress: bool = True,
    **build_options: Any,
) -> DenseIndex:
    """Build the index of `corpus` and save it (atomically) to `out_dir`.

    The build is resumable: it checkpoints into `partial_dir(out_dir)` (pass `resume_dir=None` in
    `build_options` to opt out), resumes from what an interrupted build left there, and deletes it
    once the index is saved.
    """
    with build_lock(Path(out_dir)):
        return _build_and_save(corpus, Path(out_dir), encoder_name, show_progress, build_options)


def _build_and_save(
    corpus: Any,
    target: Path,
    encoder_name: str | os.PathLike[str] | None,
    show_progress: bool,
    build_options: dict[str, Any],
) -> DenseIndex:
    options = dict(build_options)
    resume_dir = options.pop("resume_dir", partial_dir(target))
    if len(corpus.passages) >= options.pop("compress_threshold", DEFAULT_COMPRESS_THRESHOLD):
        build_large(
            corpus, target, encoder_name, resume_dir=resume_dir, show_progress=show_progress, **options
        )
        index = DenseIndex.load(target, verify=False)  # just written and hashed
    else:
        index = DenseIndex.build(
            corpus.passages,
            encoder_name,
            corpus_checksum=corpus.checksum(),
            show_progress=show_progress,
            resume_dir=resume_dir,
            **options,
        )
        index.save(target)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return index


# --- helpers ----------------------------------------------------------------------------------------


def _encode_sorted(
    texts: list[str],
    encoder: SentenceTransformer,
    batch_size: int,
    show_progress: bool,
    checkpoint: Checkpoint | None = None,
) -> np.ndarray:
    """Encode longest-first (as sentence-transformers does, so batches pad little) with one progress bar.

    With a checkpoint, the passages (in that longest-first order) go in chunks of `chunk_size`: chunks
    it already holds are copied from it, the others are encoded and handed to it as each one finishes.
    """
    from tqdm.auto import tqdm

    order = np.argsort([-len(t) for t in texts], kind="stable")
    dim = encoder.get_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    chunk = checkpoint.chunk_size if checkpoint is not None else max(1, len(texts))
    done = checkpoint.done if checkpoint is not None else {}
    for number, stored in done.items():
        out[order[number * chunk : (number + 1) * chunk]] = stored
    resumed = sum(len(stored) for stored in done.values())
    per_call = batch_size * _ENCODE_CHUNK_BATCHES
    with tqdm(
        total=len(texts),
        initial=resumed,
        desc="Encoding passages",
        unit="passage",
        disable=not show_progress,
    ) as bar:
        for number, start in enumerate(range(0, len(texts), chunk)):
            if number in done:
                continue
            chunk_rows = order[start : start + chunk]
            for offset in range(0, len(chunk_rows), per_call):
                rows = chunk_rows[offset : offset + per_call]
                out[rows] = encode([texts[i] for i in rows], encoder, batch_size=batch_size)
                bar.update(len(rows))
            if checkpoint is not None:
                checkpoint.save(number, out[chunk_rows])
    return out


def _choose_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, but never fewer than 39 training points per list (FAISS's minimum)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def _train_ivf(vectors: np.ndarray, nlist: int, seed: int) -> faiss.Index:
    n, dim = vectors.shape
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample_size = min(n, 64 * nlist)
    sample = (
        vectors
        if sample_size == n
        else vectors[np.random.default_rng(seed).choice(n, sample_size, replace=False)]
    )
    index.cp.seed = seed
    index.train(np.ascontiguousarray(sample))
    index.add(vectors)
    return index

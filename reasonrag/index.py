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
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
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

from reasonrag.encoder import encode, encoder_fingerprint, load_encoder, same_encoder
from reasonrag.errors import InputError, InvalidIndexError
from reasonrag.types import Passage

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

FORMAT = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
FAISS_FILE = "faiss.index"
DEFAULT_EXACT_THRESHOLD = 100_000
DEFAULT_OVERSAMPLE = 4
DEFAULT_NPROBE = 16
_ENCODE_CHUNK_BATCHES = 4  # batches per encoder call: the progress bar moves once per call
DEFAULT_CHECKPOINT_EVERY = 4096  # passages per checkpointed chunk of a resumable build
PARTIAL_SUFFIX = ".partial"
PARTIAL_META = "partial.json"
PARTIAL_FORMAT = 1

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
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.manifest = manifest
        self.path = path
        if self.kind == "ivf":
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
        if self.kind == "ivf":
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
                "texts_sha256": _texts_sha256(texts),
                "count": len(texts),
                "encoder": fingerprint,
                "dim": encoder.get_embedding_dimension(),
                "dtype": dtype,
                "chunk_size": int(checkpoint_every),
                "batch_size": int(batch_size),
            }
            checkpoint = _Checkpoint.open(Path(resume_dir), identity)
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
        if self.kind != "ivf":
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
            exact = self.embeddings[cand] @ query
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
                f"the encoder changed (index built with {_describe(self.encoder)}, "
                f"now using {_describe(fingerprint)})"
            )
        if count is not None and count != self.count:
            return f"the index holds {self.count} passages, the corpus {count}"
        return None

    # --- saving and loading ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to `directory` atomically, replacing any index already there."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        _recover(target)
        _remove_stale_temps(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            manifest = dict(self.manifest)
            files: dict[str, dict[str, Any]] = {}
            stored = self.embeddings.astype(manifest["dtype"])
            with open(tmp / EMBEDDINGS, "wb") as f:
                np.save(f, stored, allow_pickle=False)
            files[EMBEDDINGS] = _file_record(tmp / EMBEDDINGS)
            if self.kind == "ivf":
                faiss.write_index(self._faiss, str(tmp / FAISS_FILE))
                files[FAISS_FILE] = _file_record(tmp / FAISS_FILE)
            manifest["files"] = files
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:  # last: it vouches for the others
                json.dump(manifest, f, indent=2, sort_keys=True)
                f.write("\n")
            for name in [*files, MANIFEST]:
                _fsync_file(tmp / name)
            _fsync_dir(tmp)
            _swap_into_place(tmp, target)
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
        _recover(path)
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
        if manifest["kind"] not in ("flat", "ivf"):
            raise InvalidIndexError(f"{manifest_path}: unknown kind {manifest['kind']!r}")
        files = manifest.get("files") or {}
        needed = [EMBEDDINGS] + ([FAISS_FILE] if manifest["kind"] == "ivf" else [])
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
            if verify and _sha256(file) != record.get("sha256"):
                raise InvalidIndexError(f"{file} does not match the sha256 in {MANIFEST} (corrupted?)")
        try:
            embeddings = np.load(path / EMBEDDINGS, allow_pickle=False)
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
        if manifest["kind"] == "ivf":
            try:
                faiss_index = faiss.read_index(str(path / FAISS_FILE))
            except RuntimeError as exc:
                raise InvalidIndexError(f"{path / FAISS_FILE} is unreadable: {exc}") from None
            if faiss_index.ntotal != expected[0] or faiss_index.d != expected[1]:
                raise InvalidIndexError(f"{path / FAISS_FILE} does not match {EMBEDDINGS}")
        return cls(embeddings.astype(np.float32), manifest, faiss_index=faiss_index, path=path)


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


def default_cache_dir() -> Path:
    """$REASONRAG_CACHE, else $XDG_CACHE_HOME/reasonrag, else ~/.cache/reasonrag."""
    if os.environ.get("REASONRAG_CACHE"):
        return Path(os.environ["REASONRAG_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "reasonrag"


def cache_path(
    corpus: Any, fingerprint: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the cached index of `corpus` under an encoder lives."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = fingerprint.get("sha256") or hashlib.sha256(str(fingerprint.get("name")).encode()).hexdigest()
    return base / "indexes" / f"{corpus.name}-{corpus.checksum()[:12]}-{key[:12]}"


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
            if not (place / MANIFEST).exists() and not _backups(place):
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
    return _build_and_save(corpus, Path(out_dir), encoder_name, show_progress, build_options)


def partial_dir(target: str | os.PathLike[str]) -> Path:
    """The work directory where an unfinished build of the index at `target` keeps its chunks."""
    path = Path(target)
    return path.parent / f"{path.name}{PARTIAL_SUFFIX}"


def _build_and_save(
    corpus: Any,
    target: Path,
    encoder_name: str | os.PathLike[str] | None,
    show_progress: bool,
    build_options: dict[str, Any],
) -> DenseIndex:
    options = dict(build_options)
    resume_dir = options.pop("resume_dir", partial_dir(target))
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
    checkpoint: _Checkpoint | None = None,
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


class _Checkpoint:
    """The finished chunks of a resumable build, kept in a work directory (see the module docstring)."""

    def __init__(self, directory: Path, meta: dict[str, Any], done: dict[int, np.ndarray]) -> None:
        self.directory = directory
        self.meta = meta
        self.done = done

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @classmethod
    def open(cls, directory: Path, identity: dict[str, Any]) -> _Checkpoint:
        """Take over what an earlier build left in `directory` when it fits `identity`, else start afresh.

        Says on stderr how many passages are resumed, or why an earlier build's chunks are discarded.
        """
        meta: dict[str, Any] | None = None
        if directory.exists():
            meta, reason = _read_partial_meta(directory)
            if meta is not None:
                reason = _partial_mismatch(meta, identity)
            if reason is not None:
                print(
                    f"reasonrag: discarding the unfinished index build in {directory}: {reason}",
                    file=sys.stderr,
                    flush=True,
                )
                _remove(directory)
                meta = None
        if meta is None:
            directory.mkdir(parents=True, exist_ok=True)
            checkpoint = cls(directory, {**identity, "chunks": {}}, {})
            checkpoint._write_meta()
            return checkpoint
        checkpoint = cls(directory, meta, {})
        damaged = checkpoint._take_over_chunks()
        resumed = sum(len(stored) for stored in checkpoint.done.values())
        note = f" ({damaged} damaged chunk(s) will be encoded again)" if damaged else ""
        print(
            f"reasonrag: resuming the unfinished index build in {directory}: "
            f"{resumed} of {identity['count']} passages already encoded{note}",
            file=sys.stderr,
            flush=True,
        )
        return checkpoint

    def _take_over_chunks(self) -> int:
        """Load the chunks partial.json vouches for into `done`, drop the rest; returns how many were bad."""
        count, dim, dtype = int(self.meta["count"]), int(self.meta["dim"]), self.meta["dtype"]
        records = self.meta.get("chunks")
        if not isinstance(records, dict):
            records = {}
        kept: dict[str, Any] = {}
        damaged = 0
        for key, record in records.items():
            try:
                number = int(key)
                rows = min(self.chunk_size, count - number * self.chunk_size)
                path = self.directory / _chunk_name(number)
                if (
                    number < 0
                    or rows < 1
                    or not isinstance(record, dict)
                    or _sha256(path) != record.get("sha256")
                ):
                    raise ValueError("not the chunk partial.json describes")
                stored = np.load(path, allow_pickle=False)
                if stored.shape != (rows, dim) or str(stored.dtype) != dtype:
                    raise ValueError(f"shape {stored.shape} {stored.dtype}, expected ({rows}, {dim}) {dtype}")
            except (OSError, ValueError):
                damaged += 1
                continue
            self.done[number] = stored
            kept[key] = record
        self.meta["chunks"] = kept
        wanted = {PARTIAL_META, *(_chunk_name(number) for number in self.done)}
        for leftover in self.directory.iterdir():  # damaged chunks, and temp files of dead builds
            if leftover.name not in wanted and not _written_by_live_process(leftover):
                _remove(leftover)
        self._write_meta()
        return damaged

    def save(self, number: int, vectors: np.ndarray) -> None:
        """Store chunk `number` atomically, then record it (with its sha256) in partial.json."""
        buffer = io.BytesIO()
        np.save(buffer, vectors.astype(self.meta["dtype"]), allow_pickle=False)
        data = buffer.getvalue()
        _write_atomically(self.directory / _chunk_name(number), data)
        self.meta["chunks"][str(number)] = {"rows": len(vectors), "sha256": hashlib.sha256(data).hexdigest()}
        self._write_meta()

    def _write_meta(self) -> None:
        text = json.dumps(self.meta, indent=2, sort_keys=True) + "\n"
        _write_atomically(self.directory / PARTIAL_META, text.encode("utf-8"))


def _chunk_name(number: int) -> str:
    return f"chunk-{number:06d}.npy"


def _read_partial_meta(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = directory / PARTIAL_META
    try:
        meta = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None, f"it has no {PARTIAL_META}"
    except (OSError, ValueError) as exc:
        return None, f"its {PARTIAL_META} is unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, f"its {PARTIAL_META} is not a JSON object"
    return meta, None


def _partial_mismatch(meta: dict[str, Any], identity: dict[str, Any]) -> str | None:
    """None when an earlier build's chunks can be reused for `identity`, else why not."""
    if meta.get("format") != identity["format"]:
        return f"it has format {meta.get('format')!r}, this reasonrag writes format {identity['format']}"
    if meta.get("corpus_checksum") != identity["corpus_checksum"]:
        return (
            f"it was for another corpus (sha256 {str(meta.get('corpus_checksum'))[:12]}, "
            f"the corpus is now {identity['corpus_checksum'][:12]})"
        )
    if meta.get("texts_sha256") != identity["texts_sha256"] or meta.get("count") != identity["count"]:
        return f"it was for other passages (the corpus now has {identity['count']})"
    encoder = meta.get("encoder")
    if not isinstance(encoder, dict) or not same_encoder(encoder, identity["encoder"]):
        was = _describe(encoder) if isinstance(encoder, dict) else "an unknown encoder"
        return f"it was encoded with {was}, now using {_describe(identity['encoder'])}"
    settings = ("dim", "dtype", "chunk_size", "batch_size")
    changed = [
        f"{key} {meta.get(key)!r} -> {identity[key]!r}" for key in settings if meta.get(key) != identity[key]
    ]
    if changed:
        return f"it was built with other settings ({', '.join(changed)})"
    return None


def _texts_sha256(texts: Sequence[str]) -> str:
    """A hash of the exact texts to encode, in order (each one length-prefixed)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a file via a fsynced temporary sibling renamed over it: readers see all of it or none."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _written_by_live_process(path: Path) -> bool:
    """Whether `path` is the temp file of a write still under way in another process."""
    if ".tmp-" not in path.name:
        return False
    try:
        pid = int(path.name.rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and _pid_alive(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


def _describe(fingerprint: dict[str, Any]) -> str:
    sha = fingerprint.get("sha256")
    return f"{fingerprint.get('name')!r}" + (f" sha256 {sha[:12]}" if sha else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backups(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.is_dir() else []


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing target is first moved aside, then deleted.

    A directory cannot be renamed over a non-empty one, so there is a moment with the old index moved
    aside and the new one not yet in place; `_recover` puts the old one back if a kill lands there.
    """
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(target, backup)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _recover(target: Path) -> None:
    """Undo a save killed between its two renames: put the moved-aside index back."""
    if target.exists():
        return
    for backup in reversed(_backups(target)):
        if (backup / MANIFEST).is_file():
            try:
                os.replace(backup, target)
            except OSError:
                continue
            return


def _remove_stale_temps(target: Path) -> None:
    """Delete what saves killed mid-write left beside `target`: temp dirs, and backups once it exists."""
    leftovers = list(target.parent.glob(f".{target.name}.tmp-*"))
    if target.exists():
        leftovers += _backups(target)
    for leftover in leftovers:
        try:
            pid = int(leftover.name.rsplit("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True

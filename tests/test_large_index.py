"""Large corpora: the compressed index (8-bit or product codes, exact re-ranking from memory-mapped rows) and
its streamed, resumable build. Thresholds are lowered so that a few dozen passages take the large path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import reasonrag.retrieval.encoder as encoder_module
from reasonrag.data.corpus import Corpus
from reasonrag.errors import InputError
from reasonrag.retrieval.encoder import encode
from reasonrag.retrieval.index import DenseIndex, build_index, open_index
from reasonrag.retrieval.index_files import partial_dir
from reasonrag.retrieval.large_index import build_compressed, choose_kind

META = {"encoder": {"name": "synthetic"}, "corpus_checksum": "s" * 64}


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, dim))
    x = centers[rng.integers(0, 50, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf_sq8", pytest.param("ivf_pq", marks=pytest.mark.slow)])
def test_compressed_index_reranks_exactly_and_finds_what_exact_search_finds(kind, tmp_path):
    vectors = clustered(3000, 32)
    chunks = (vectors[i : i + 700] for i in range(0, len(vectors), 700))  # chunks need not divide n
    build_compressed(chunks, len(vectors), 32, tmp_path / "idx", META, kind=kind, pq_m=8, show_progress=False)
    index = DenseIndex.load(tmp_path / "idx")
    assert index.kind == kind and index.count == 3000
    assert isinstance(index.embeddings, np.memmap), "rows stay on disk, read when a query needs them"
    stored = vectors.astype(np.float16).astype(np.float32)
    queries = clustered(100, 32, seed=1)
    index.nprobe = index.manifest["nlist"]  # every list probed: only the codes' error is left
    scores, rows = index.search(queries, 5)
    exact = queries @ stored.T
    np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), rtol=1e-5, atol=1e-6)
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows.tolist(), truth.tolist())])
    assert recall >= 0.98


def test_the_kind_is_chosen_by_size_and_bad_streams_are_refused(tmp_path):
    assert choose_kind(1_000_000) == "ivf_sq8" and choose_kind(21_000_000) == "ivf_pq"
    vectors = clustered(100, 16)
    with pytest.raises(InputError, match="announced"):
        build_compressed([vectors], 200, 16, tmp_path / "short", META, show_progress=False)
    with pytest.raises(InputError, match="shape"):
        build_compressed([vectors[:, :8]], 100, 16, tmp_path / "narrow", META, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed build leaves nothing behind"


def corpus_of(root: Path, n: int) -> Corpus:
    topics = ["rivers", "mountains", "violins", "volcanoes", "chess", "coffee", "bees", "deserts"]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "passages.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            topic = topics[i % len(topics)]
            text = f"Note {i} is about {topic}, with {i % 7} remarks on {topics[(i * 3) % len(topics)]}."
            f.write(json.dumps({"id": f"n{i}", "title": f"{topic.title()} {i}", "text": text}) + "\n")
    return Corpus.load(root)


class DyingEncode:
    """Stands in for the encoder's `encode`: records each call's size, raises Ctrl-C on call `die_on`."""

    def __init__(self, die_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.die_on = die_on

    def __call__(self, texts, *args, **kwargs):
        if self.die_on is not None and len(self.calls) + 1 == self.die_on:
            raise KeyboardInterrupt
        self.calls.append(len(texts))
        return encode(texts, *args, **kwargs)


LARGE = {"compress_threshold": 40, "checkpoint_every": 16, "batch_size": 8}


def test_a_large_corpus_builds_streamed_resumes_after_a_kill_and_equals_an_unbroken_build(
    encoder, tmp_path, monkeypatch, capsys
):
    corpus = corpus_of(tmp_path / "corpus", 48)
    target = tmp_path / "idx"
    monkeypatch.setattr(encoder_module, "encode", DyingEncode(die_on=3))
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, target, show_progress=False, **LARGE)
    assert not target.exists()
    chunks = sorted(p.name for p in partial_dir(target).iterdir() if p.suffix == ".npy")
    assert chunks == ["chunk-000000.npy", "chunk-000001.npy"]

    counting = DyingEncode()
    monkeypatch.setattr(encoder_module, "encode", counting)
    resumed = build_index(corpus, target, show_progress=False, **LARGE)
    assert counting.calls == [16], "only the chunk the kill lost is encoded again"
    assert "resuming" in capsys.readouterr().err and not partial_dir(target).exists()
    assert resumed.kind == "ivf_sq8" and resumed.count == 48

    monkeypatch.undo()
    unbroken = build_index(corpus, tmp_path / "unbroken", show_progress=False, **LARGE)
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(unbroken.embeddings))
    queries = encode(["Which note is about volcanoes?", "Note 7 is about coffee"], encoder)
    for got, want in zip(resumed.search(queries, 5), unbroken.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)
    exact = queries @ np.asarray(resumed.embeddings, dtype=np.float32).T
    _, rows = resumed.search(queries, 1)
    assert rows[:, 0].tolist() == np.argmax(exact, axis=1).tolist()
    # open_index builds the same way into its cache, and reuses that index afterwards
    cached = open_index(corpus, cache_dir=tmp_path / "cache", show_progress=False, **LARGE)
    reused = open_index(corpus, cache_dir=tmp_path / "cache", rebuild="never", show_progress=False)
    assert cached.kind == reused.kind == "ivf_sq8" and reused.path == cached.path
    np.testing.assert_array_equal(np.asarray(reused.embeddings), np.asarray(unbroken.embeddings))

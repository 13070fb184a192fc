"""The reliability suite, fast part: concurrency, corrupted artifacts, fuzzed loaders (docs/reliability.md).

The kill -9 runs of every long command are in tests/test_reliability_kill.py (slow).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

import reasonrag.retrieval.index as index_module
from reasonrag.data.corpus import Corpus
from reasonrag.retrieval.encoder import encode, encoder_fingerprint
from reasonrag.retrieval.index import DenseIndex, cache_path, open_index

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")


def run_in_threads(n: int, target) -> tuple[list, list[BaseException]]:
    results, errors = [None] * n, []

    def work(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_two_builds_of_the_same_new_index_take_turns_and_share_one_result(tmp_path, monkeypatch, capsys):
    """Two builds of one new index overlap (a slow encoder): the second waits and reuses the first's."""
    corpus = Corpus.load(CORPUS)
    encoded: list[int] = []

    def slow_encode(texts, *args, **kwargs):
        encoded.append(len(texts))
        time.sleep(0.3)
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(index_module, "encode", slow_encode)
    indexes, errors = run_in_threads(
        2,
        lambda i: open_index(
            corpus, cache_dir=tmp_path, show_progress=False, batch_size=2, checkpoint_every=4
        ),
    )
    assert not errors, errors
    assert sum(encoded) == len(corpus.passages), "the corpus is encoded once, not twice"
    assert indexes[0].path == indexes[1].path == cache_path(corpus, encoder_fingerprint(None), tmp_path)
    np.testing.assert_array_equal(indexes[0].embeddings, indexes[1].embeddings)
    assert "waiting for it" in capsys.readouterr().err
    leftovers = [p.name for p in indexes[0].path.parent.iterdir() if p.name != indexes[0].path.name]
    assert [name for name in leftovers if not name.endswith(".lock")] == [], "no work directory left"
    assert DenseIndex.load(indexes[0].path).count == len(corpus.passages)

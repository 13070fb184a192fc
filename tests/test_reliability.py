"""The reliability suite, fast part: concurrency, corrupted artifacts, fuzzed loaders (docs/reliability.md).

The kill -9 runs of every long command are in tests/test_reliability_kill.py (slow).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

import reasonrag.retrieval.index as index_module
from reasonrag.agent.graph import build_agent, run_agent
from reasonrag.agent.nodes import BacktrackConfig
from reasonrag.data.corpus import Corpus
from reasonrag.prm.loading import load_prm
from reasonrag.retrieval.encoder import encode, encoder_fingerprint
from reasonrag.retrieval.index import DenseIndex, cache_path, open_index
from reasonrag.retrieval.retriever import DenseRetriever

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


# -- a thread is a conversation: each question starts clean (item 4) ---------------------------------------
@pytest.fixture(scope="module")
def backtracking_agent(tmp_path_factory):
    """The real agent over the tiny corpus with the shipped PRM, a threshold every path falls below (so it
    backtracks, abandons and finishes several endings), and a checkpointer that keeps each thread."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    try:
        corpus = Corpus.load(CORPUS)
        yield build_agent(
            retriever=DenseRetriever(corpus),
            k=3,
            prm=load_prm(None),
            backtrack=BacktrackConfig(threshold=1.0, max_backtracks=2),
            checkpointer=InMemorySaver(),
        )
    finally:
        mp.undo()


def _seen_by_a_person(state: dict) -> dict:
    keys = ("answer", "status", "backtracks", "path_score", "selected_from", "hop")
    out = {k: state.get(k) for k in keys}
    for channel in ("steps", "branches", "abandoned", "finished", "trace", "evidence", "seen"):
        out[channel] = json.loads(json.dumps(state.get(channel), default=str))
    for step in [*out["steps"], *out["trace"], *(s for a in out["abandoned"] for s in a["steps"])]:
        step.pop("seconds", None)
    return out


def test_a_second_question_on_a_thread_carries_nothing_of_the_first(backtracking_agent):
    first, second = (
        "Who wrote the novel The Quiet Orchard?",
        "Where was the director of the film Harbor Lights born?",
    )
    thread = {"configurable": {"thread_id": "conversation"}}
    before = run_agent(backtracking_agent, first, config=thread)
    assert before["backtracks"] == 2 and before["abandoned"] and before["finished"]
    after = run_agent(backtracking_agent, second, config=thread)
    alone = run_agent(backtracking_agent, second, config={"configurable": {"thread_id": "fresh"}})
    assert _seen_by_a_person(after) == _seen_by_a_person(alone)
    assert "enugu" in after["answer"].lower()

"""BM25 and its fusion with the dense retriever, on the real encoder and a real FAISS index."""

from __future__ import annotations

import numpy as np
import pytest

from reasonrag.errors import InputError
from reasonrag.retrieval.lexical import LexicalIndex, tokens
from reasonrag.retrieval.retriever import DenseRetriever


@pytest.fixture(scope="module")
def texts(small_passages) -> list[str]:
    return [f"{p.title} {p.text}" for p in small_passages]


def test_tokens_fold_case_accents_and_drop_function_words():
    assert tokens("The Léonardo of Beyoncé's") == ["leonardo", "beyonce", "s"]
    assert tokens("what is the") == []


def test_bm25_ranks_the_passage_naming_the_query_terms_first(texts):
    index = LexicalIndex(texts)
    scores = index.scores(["Guido van Rossum", "Léonardo da Vinci", "of the and", "zzyzx"])
    assert scores.shape == (4, len(texts))
    assert int(np.argmax(scores[0])) == 2 and int(np.argmax(scores[1])) == 7
    assert not scores[2].any() and not scores[3].any()  # no known term: no lexical evidence at all
    # a rarer term weighs more: "Rossum" appears once, "capital" twice
    rossum, capital = index.scores(["Rossum", "capital"])
    assert rossum.max() > capital.max()


def test_fused_score_is_the_documented_mix_of_cosine_and_scaled_bm25(small_passages, texts):
    retriever = DenseRetriever.from_passages(small_passages, lexical_weight=0.5)
    query = "Which physicist developed relativity?"
    hits = retriever.search(query, k=5)
    cosine = retriever.encode(texts) @ retriever.encode([query])[0]
    lexical = LexicalIndex(texts).scores([query])[0]
    expected = 0.5 * cosine + 0.5 * lexical / lexical.max()
    order = np.argsort(-expected)[:5]
    assert [h.passage.id for h in hits] == [small_passages[i].id for i in order]
    assert [h.score for h in hits] == pytest.approx(expected[order].tolist(), abs=2e-3)


def test_weight_zero_is_the_dense_search_and_never_builds_bm25(small_passages):
    dense = DenseRetriever.from_passages(small_passages, lexical_weight=0.0)
    hits = dense.search("Where is the Sahara?", k=3)
    scores, rows = dense.index.search(dense.encode(["Where is the Sahara?"]), 3)
    assert [h.passage.id for h in hits] == [small_passages[r].id for r in rows[0]]
    assert [h.score for h in hits] == pytest.approx(scores[0].tolist())
    assert dense.lexical._index is None


def test_pure_lexical_search_finds_a_name_and_still_excludes_and_returns_k(small_passages):
    retriever = DenseRetriever.from_passages(small_passages, lexical_weight=1.0)
    assert retriever.search("Fleming", k=1)[0].passage.id == "p13"
    after = retriever.search("Fleming", k=4, exclude={"p13"})
    assert len(after) == 4 and "p13" not in {h.passage.id for h in after}


def test_a_weight_outside_0_1_is_refused(small_passages):
    with pytest.raises(InputError, match="lexical_weight"):
        DenseRetriever.from_passages(small_passages, lexical_weight=1.5)

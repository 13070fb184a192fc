"""Our retriever under langchain-tests' standard retriever suite, and LangChain retrievers driving ours."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from reasonrag.data.types import Hit
from reasonrag.errors import InputError, InvalidIndexError
from reasonrag.retrieval.retriever import (
    DenseRetriever,
    LangChainRetrieverAdapter,
    ReasonRAGRetriever,
    as_search_backend,
)


@pytest.fixture(scope="module")
def dense(small_passages, encoder) -> DenseRetriever:
    return DenseRetriever.from_passages(small_passages, k=4)


# --- the langchain-tests standard suite -----------------------------------------------------------------


# The suite's async test runs under pytest-asyncio's auto mode (set in pyproject.toml): no marks needed.
class TestReasonRAGRetrieverStandard(RetrieversIntegrationTests):
    _dense: DenseRetriever | None = None

    @pytest.fixture(autouse=True)
    def _use_small_corpus(self, dense):
        type(self)._dense = dense

    @property
    def retriever_constructor(self) -> type[ReasonRAGRetriever]:
        return ReasonRAGRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": self._dense, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "Which mountain is the highest in the world?"


# --- ReasonRAGRetriever and DenseRetriever behaviour ----------------------------------------------------


def test_documents_carry_passage_text_and_metadata(dense):
    docs = dense.as_langchain(k=3).invoke("Who painted the Mona Lisa?")
    assert len(docs) == 3
    top = docs[0]
    assert top.page_content == dense.corpus.by_id("p07").text
    assert top.metadata["id"] == "p07" and top.metadata["title"] == "Mona Lisa"
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and isinstance(scores[0], float)
    assert len(dense.as_langchain().invoke("painting")) == dense.k


def test_k_field_is_validated(dense):
    with pytest.raises(ValueError):
        ReasonRAGRetriever(retriever=dense, k=0)


def test_search_excludes_seen_passages_and_still_returns_k(dense):
    first = dense.search("What is the capital of France?", k=3)
    assert first[0].passage.id == "p00" and all(isinstance(h, Hit) for h in first)
    seen = {h.passage.id for h in first}
    after = dense.search("What is the capital of France?", k=3, exclude=seen)
    assert len(after) == 3 and not seen & {h.passage.id for h in after}
    # excluding everything but two passages leaves exactly those two
    keep = {"p05", "p18"}
    rest = {p.id for p in dense.passages} - keep
    assert {h.passage.id for h in dense.search("anything", k=5, exclude=rest)} == keep


def test_search_batch_matches_single_searches(dense):
    queries = ["Who discovered penicillin?", "Where is the Sahara?", "What do bees make?"]
    batch = dense.search_batch(queries, k=2)
    assert [[h.passage.id for h in hits] for hits in batch] == [
        [h.passage.id for h in dense.search(q, k=2)] for q in queries
    ]
    assert (
        batch[0][0].passage.id == "p13"
        and batch[1][0].passage.id == "p15"
        and batch[2][0].passage.id == "p08"
    )
    assert dense.search_batch([]) == []
    with pytest.raises(InputError):
        dense.search_batch("one string")
    with pytest.raises(InputError):
        dense.search("x", k=0)


def test_encoder_is_exposed_and_shared(dense, encoder):
    assert dense.encoder is encoder
    vectors = dense.encode(["Paris is in France.", "Bees make honey."])
    assert vectors.shape == (2, 384)


def test_a_mismatched_index_is_refused(dense, small_passages):
    with pytest.raises(InvalidIndexError, match="does not fit"):
        DenseRetriever(dense.corpus.__class__(small_passages[:3], "other"), index=dense.index)


# --- LangChain retrievers driving the agent's search ----------------------------------------------------


class KeywordRetriever(BaseRetriever):
    """A plain langchain retriever: documents ranked by how many query words they share."""

    documents: list[Document]
    k: int = 4
    calls: list[int] = []

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.calls.append(self.k)
        words = set(query.lower().split())
        ranked = sorted(self.documents, key=lambda d: -len(words & set(d.page_content.lower().split())))
        return ranked[: self.k]


class FixedRetriever(BaseRetriever):
    """A langchain retriever with no notion of k: always the same documents."""

    documents: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.documents)


DOCS = [
    Document(
        page_content="The river flows north. It floods every spring.", metadata={"id": "r1", "title": "Nile"}
    ),
    Document(
        page_content="The river is the longest in Asia.",
        metadata={"id": "r2", "title": "Yangtze", "score": 0.9},
    ),
    Document(page_content="A desert river dries up in summer."),  # no id, no title
    Document(page_content="Mountains rise above the clouds.", metadata={"id": "m1", "title": "Alps"}),
    Document(page_content="The river delta is fertile.", metadata={"id": "r3", "title": "Mekong"}),
]


def test_adapter_maps_documents_to_hits():
    lc = KeywordRetriever(documents=DOCS, calls=[])
    adapter = LangChainRetrieverAdapter(lc, k=3)
    hits = adapter.search("the river floods every spring")
    assert [h.passage.id for h in hits][:1] == ["r1"] and len(hits) == 3
    nile = hits[0].passage
    assert nile.title == "Nile" and nile.text == DOCS[0].page_content
    assert nile.sentences == ("The river flows north.", "It floods every spring.")
    assert hits[0].score == 1.0  # no score in metadata: 1 / (rank + 1)
    yangtze = next(h for h in adapter.search("river longest asia", k=5) if h.passage.id == "r2")
    assert yangtze.score == 0.9  # a score in metadata is kept
    # a document without an id gets a stable content hash and an empty title
    desert = [h for h in adapter.search("desert river dries summer", k=1)][0].passage
    assert desert.id.startswith("doc-") and desert.title == ""
    assert adapter.search("desert river dries summer", k=1)[0].passage.id == desert.id


def test_adapter_excludes_and_still_returns_k_without_touching_the_wrapped_retriever():
    lc = KeywordRetriever(documents=DOCS, k=4, calls=[])
    adapter = LangChainRetrieverAdapter(lc, k=2)
    first = adapter.search("the river")
    seen = {h.passage.id for h in first}
    after = adapter.search("the river", exclude=seen)
    assert len(after) == 2 and not seen & {h.passage.id for h in after}
    assert lc.calls == [2, 4]  # asked for k, then k + len(exclude), through its k field
    assert lc.k == 4  # the caller's retriever is not mutated
    assert [len(hits) for hits in adapter.search_batch(["river", "mountains clouds"], k=1)] == [1, 1]


def test_adapter_truncates_retrievers_without_k():
    adapter = LangChainRetrieverAdapter(FixedRetriever(documents=DOCS), k=2)
    assert [h.passage.id for h in adapter.search("x")] == ["r1", "r2"]
    assert [h.passage.id for h in adapter.search("x", exclude={"r1"})][:1] == ["r2"]


def test_adapter_over_our_langchain_retriever_matches_dense(dense):
    adapter = LangChainRetrieverAdapter(dense.as_langchain(k=1))
    query = "Which physicist developed relativity?"
    ours = dense.search(query, k=3, exclude={"p05"})
    theirs = adapter.search(query, k=3, exclude={"p05"})
    assert [h.passage.id for h in theirs] == [h.passage.id for h in ours]
    assert [h.score for h in theirs] == pytest.approx([h.score for h in ours])
    assert adapter.encoder is dense.encoder


def test_as_search_backend(dense):
    assert as_search_backend(dense) is dense
    assert as_search_backend(dense.as_langchain()) is dense
    lc = KeywordRetriever(documents=DOCS, calls=[])
    wrapped = as_search_backend(lc, k=3)
    assert isinstance(wrapped, LangChainRetrieverAdapter) and wrapped.retriever is lc and wrapped.k == 3
    assert as_search_backend(wrapped) is wrapped
    with pytest.raises(TypeError, match="BaseRetriever"):
        as_search_backend(object())
    with pytest.raises(TypeError):
        LangChainRetrieverAdapter(dense)

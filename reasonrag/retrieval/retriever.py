"""Dense retrieval over a corpus, and the bridges to LangChain in both directions.

- `DenseRetriever`: our search backend (encoder + DenseIndex), returning `Hit`s.
- `ReasonRAGRetriever`: a langchain-core `BaseRetriever` (with a `k` field) around a DenseRetriever.
- `LangChainRetrieverAdapter`: any langchain `BaseRetriever` as a search backend for the agent.
- `as_search_backend(obj)`: whichever of those the agent was handed, as a search backend.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, LangSmithRetrieverParams
from pydantic import Field

from reasonrag.data.types import Hit, Passage
from reasonrag.errors import InputError, InvalidIndexError
from reasonrag.retrieval.encoder import encode, encoder_fingerprint, load_encoder
from reasonrag.retrieval.index import DenseIndex, open_index
from reasonrag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT, FUSION_CANDIDATES, LazyLexicalIndex, fuse

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@runtime_checkable
class SearchBackend(Protocol):
    """What the agent needs from a retriever."""

    def search(self, query: str, k: int | None = None, exclude: Iterable[str] = ()) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, not {k!r}")
    return int(k)


@dataclass
class _Source:
    root: None = None


class _PassageList:
    """A corpus made from passages in memory (for DenseRetriever.from_passages): no shipped index."""

    def __init__(self, passages: Sequence[Passage], name: str) -> None:
        self.name = name
        self.passages = list(passages)
        self.source = _Source()
        self._by_id = {p.id: p for p in self.passages}
        digest = hashlib.sha256()
        for p in self.passages:
            digest.update(json.dumps([p.id, p.title, p.text], ensure_ascii=False).encode("utf-8") + b"\n")
        self._checksum = digest.hexdigest()

    def by_id(self, pid: str) -> Passage:
        return self._by_id[pid]

    def checksum(self) -> str:
        return self._checksum


class DenseRetriever:
    """Top-k passages of a corpus for a query, by cosine similarity of sentence embeddings, fused with BM25.

    `lexical_weight` is BM25's share of the score (`reasonrag.retrieval.lexical`; 0: dense only).

    `index` defaults to `open_index(corpus, encoder_name, rebuild=rebuild)`: the shipped index when valid,
    else a cached one, else a fresh build. `.encoder` is the loaded SentenceTransformer, shared with any
    component that needs to embed text the same way (e.g. scoring evidence sentences).
    """

    def __init__(
        self,
        corpus: Any,
        encoder_name: str | os.PathLike[str] | None = None,
        *,
        index: DenseIndex | None = None,
        k: int = 5,
        rebuild: str = "auto",
        show_progress: bool = True,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    ) -> None:
        self.corpus = corpus
        self.passages: list[Passage] = list(corpus.passages)
        self.k = _check_k(k)
        if not 0.0 <= lexical_weight <= 1.0:
            raise InputError(f"lexical_weight must be between 0 and 1, not {lexical_weight!r}")
        self.lexical_weight = float(lexical_weight)
        self.lexical = LazyLexicalIndex(lambda: [f"{p.title} {p.text}" for p in self.passages])
        self.encoder_name = encoder_name
        self.encoder: SentenceTransformer = load_encoder(encoder_name)
        if index is None:
            index = open_index(corpus, encoder_name, rebuild=rebuild, show_progress=show_progress)
        else:
            reason = index.validate(
                corpus.checksum(), encoder_fingerprint(encoder_name), count=len(self.passages)
            )
            if reason:
                raise InvalidIndexError(
                    f"the index given for corpus {corpus.name!r} does not fit it: {reason}"
                )
        self.index = index

    @classmethod
    def from_passages(
        cls,
        passages: Sequence[Passage],
        encoder_name: str | os.PathLike[str] | None = None,
        *,
        k: int = 5,
        name: str = "in-memory",
        show_progress: bool = False,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
        **build_options: Any,
    ) -> DenseRetriever:
        """A retriever over passages held in memory; the index is built now and not saved."""
        corpus = _PassageList(passages, name)
        index = DenseIndex.build(
            corpus.passages,
            encoder_name,
            corpus_checksum=corpus.checksum(),
            show_progress=show_progress,
            **build_options,
        )
        return cls(corpus, encoder_name, index=index, k=k, lexical_weight=lexical_weight)

    def __repr__(self) -> str:
        return (
            f"DenseRetriever(corpus={getattr(self.corpus, 'name', '?')!r}, k={self.k}, "
            f"lexical_weight={self.lexical_weight}, index={self.index!r})"
        )

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """Embed texts with the retriever's encoder: (n, dim) float32, L2-normalised."""
        return encode(texts, self.encoder)

    def search(self, query: str, k: int | None = None, exclude: Iterable[str] = ()) -> list[Hit]:
        """The k best passages for `query`, best first, leaving out the passage ids in `exclude`.

        Excluded passages do not count against k: k hits come back while the corpus has that many others.
        """
        return self._search([query], k, set(exclude))[0]

    def search_batch(
        self, queries: Sequence[str], k: int | None = None, exclude: Iterable[str] = ()
    ) -> list[list[Hit]]:
        """`search` for many queries, encoded in one batch."""
        if isinstance(queries, str):
            raise InputError("search_batch takes a list of queries; use search for one")
        if not queries:
            return []
        return self._search(list(queries), k, set(exclude))

    def _search(self, queries: list[str], k: int | None, exclude: set[str]) -> list[list[Hit]]:
        k = _check_k(self.k if k is None else k)
        vectors = self.encode(queries)
        if self.lexical_weight > 0:
            scores, rows = self._fused(queries, vectors, k + len(exclude))
        else:
            scores, rows = self.index.search(vectors, k + len(exclude))
        results = []
        for row_scores, row_ids in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(row_scores, row_ids, strict=True):
                if row < 0:
                    continue
                passage = self.passages[row]
                if passage.id in exclude:
                    continue
                hits.append(Hit(passage=passage, score=float(score)))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def _fused(self, queries: list[str], vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best k of the union of the dense and the BM25 top lists, by the fused score; best first."""
        n = min(max(FUSION_CANDIDATES, k), len(self.passages))
        _, dense_rows = self.index.search(vectors, n)
        lexical = self.lexical.get().scores(queries)
        out_scores = np.full((len(queries), min(k, len(self.passages))), -np.inf, dtype=np.float32)
        out_rows = np.full(out_scores.shape, -1, dtype=np.int64)
        for i, vector in enumerate(vectors):
            lex_rows = np.argpartition(-lexical[i], n - 1)[:n] if n < len(self.passages) else np.arange(n)
            cand = np.union1d(dense_rows[i][dense_rows[i] >= 0], lex_rows)
            cosine = self.index.embeddings[cand].astype(np.float32, copy=False) @ vector
            fused = fuse(cosine, lexical[i][cand], self.lexical_weight)
            best = np.argsort(-fused, kind="stable")[: out_scores.shape[1]]
            out_scores[i, : len(best)], out_rows[i, : len(best)] = fused[best], cand[best]
        return out_scores, out_rows

    def as_langchain(self, k: int | None = None) -> ReasonRAGRetriever:
        """This retriever as a langchain-core BaseRetriever (k defaults to this retriever's k)."""
        return ReasonRAGRetriever(retriever=self, k=self.k if k is None else k)


class ReasonRAGRetriever(BaseRetriever):
    """A langchain-core retriever over a reasonrag DenseRetriever.

    Documents carry the passage text as `page_content` and {"id", "title", "score"} as metadata;
    `k` is a field and can also be passed per call: `retriever.invoke(query, k=3)`.
    """

    retriever: DenseRetriever
    k: int = Field(default=5, ge=1)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        hits = self.retriever.search(query, k=self.k if k is None else k)
        return [
            Document(
                page_content=hit.passage.text,
                metadata={"id": hit.passage.id, "title": hit.passage.title, "score": hit.score},
            )
            for hit in hits
        ]

    def _get_ls_params(self, **kwargs: Any) -> LangSmithRetrieverParams:
        params = super()._get_ls_params(**kwargs)
        params["ls_embedding_provider"] = "sentence-transformers"
        params["ls_embedding_model"] = str(self.retriever.encoder_name or "default")
        return params


class LangChainRetrieverAdapter:
    """Any langchain `BaseRetriever` as a reasonrag search backend (same `search` as DenseRetriever).

    Documents become Passages: id from metadata "id" (else a stable hash of the content), title from
    metadata "title" (else ""), sentences split from the text. Scores come from metadata "score" or
    "relevance_score" when numeric, else from the rank (1, 1/2, 1/3, ...). The number of documents asked
    for is set through the retriever's `k` field (or `search_kwargs["k"]`, as on vector-store retrievers)
    on a copy, so the wrapped retriever is never mutated. `.encoder` is the default sentence encoder
    (or `encoder_name`), loaded on first use, for components that embed text.
    """

    def __init__(
        self, retriever: BaseRetriever, *, k: int = 5, encoder_name: str | os.PathLike[str] | None = None
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(
                f"LangChainRetrieverAdapter wraps a langchain BaseRetriever, not {type(retriever).__name__}"
            )
        self.retriever = retriever
        self.k = _check_k(k)
        self.encoder_name = encoder_name

    def __repr__(self) -> str:
        return f"LangChainRetrieverAdapter({type(self.retriever).__name__}, k={self.k})"

    @property
    def encoder(self) -> SentenceTransformer:
        return load_encoder(self.encoder_name)

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        return encode(texts, self.encoder)

    def _sized(self, n: int) -> BaseRetriever:
        fields = type(self.retriever).model_fields
        if "k" in fields:
            return self.retriever.model_copy(update={"k": n})
        search_kwargs = getattr(self.retriever, "search_kwargs", None)
        if "search_kwargs" in fields and isinstance(search_kwargs, dict):
            return self.retriever.model_copy(update={"search_kwargs": {**search_kwargs, "k": n}})
        return self.retriever

    def search(self, query: str, k: int | None = None, exclude: Iterable[str] = ()) -> list[Hit]:
        k = _check_k(self.k if k is None else k)
        exclude = set(exclude)
        documents = self._sized(k + len(exclude)).invoke(query)
        return self._to_hits(documents, k, exclude)

    def search_batch(
        self, queries: Sequence[str], k: int | None = None, exclude: Iterable[str] = ()
    ) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise InputError("search_batch takes a list of queries; use search for one")
        k = _check_k(self.k if k is None else k)
        exclude = set(exclude)
        if not queries:
            return []
        batches = self._sized(k + len(exclude)).batch(list(queries))
        return [self._to_hits(documents, k, exclude) for documents in batches]

    def _to_hits(self, documents: Sequence[Document], k: int, exclude: set[str]) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for rank, document in enumerate(documents):
            passage = document_to_passage(document)
            if passage.id in exclude or passage.id in seen:
                continue
            seen.add(passage.id)
            hits.append(Hit(passage=passage, score=_document_score(document, rank)))
            if len(hits) == k:
                break
        return hits


def document_to_passage(document: Document) -> Passage:
    """A langchain Document as a Passage (see LangChainRetrieverAdapter for the mapping)."""
    from reasonrag.data.corpus import split_sentences  # lazy: corpus loading is not needed to retrieve

    metadata = document.metadata or {}
    text = document.page_content or ""
    title = str(metadata.get("title") or "")
    pid = metadata.get("id")
    if pid is None or pid == "":
        pid = "doc-" + hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]
    sentences = tuple(s for s in split_sentences(text) if s.strip()) or (text,)
    return Passage(id=str(pid), title=title, text=text, sentences=sentences)


def _document_score(document: Document, rank: int) -> float:
    for key in ("score", "relevance_score"):
        value = (document.metadata or {}).get(key)
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            return float(value)
    return 1.0 / (rank + 1)


def as_search_backend(obj: Any, *, k: int | None = None) -> SearchBackend:
    """The search backend for `obj`: ours (or any SearchBackend, e.g. a RemoteRetriever) as is, a
    ReasonRAGRetriever unwrapped, any other BaseRetriever wrapped."""
    if isinstance(obj, ReasonRAGRetriever):
        return obj.retriever
    if isinstance(obj, (DenseRetriever, LangChainRetrieverAdapter, SearchBackend)):
        return obj
    if isinstance(obj, BaseRetriever):
        return LangChainRetrieverAdapter(obj, k=5 if k is None else k)
    raise TypeError(
        "expected a reasonrag DenseRetriever, a LangChainRetrieverAdapter or a langchain-core BaseRetriever, "
        f"got {type(obj).__module__}.{type(obj).__qualname__}"
    )

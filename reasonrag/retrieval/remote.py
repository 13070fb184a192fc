"""`RemoteRetriever`: search an index that `reasonrag serve` (or any Search-R1 retrieval server) holds.

Many agents, threads and Ray workers then share one index in one process instead of each loading its
own. It is a langchain-core `BaseRetriever` (with a `k` field) for LangChain apps, and a reasonrag search
backend (`search`, `search_batch`, `encode`) for the agent: `build_agent(retriever=RemoteRetriever(url=...))`
gives the same answers as the local index the server holds, because the server sends every passage's
sentences with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, PrivateAttr

from reasonrag.data.types import Hit
from reasonrag.errors import InputError, RetrieverUnavailableError
from reasonrag.retrieval.encoder import encode, load_encoder
from reasonrag.retrieval.server import document_passage


class RemoteRetriever(BaseRetriever):
    """Top-k passages from a retrieval server's `POST /retrieve` (Search-R1's contract).

    `url` is the server's address (`http://127.0.0.1:8000`, with or without `/retrieve`). Passages in
    `exclude` are asked for on top of k and dropped, so k still come back, as with a local index. An
    unreachable server is a `RetrieverUnavailableError` naming the address; a request the server rejects
    is an `InputError` carrying its message.
    """

    url: str
    k: int = Field(default=5, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    encoder_name: str | None = None
    _client: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    thread_safe: ClassVar[bool] = True  # httpx.Client is; the agent may call this from many threads at once

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/retrieve") else base + "/retrieve"

    def _http(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
            return self._client

    def __getstate__(self) -> dict[str, Any]:  # a connection does not travel (to a Ray worker, say)
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private.update(_client=None, _lock=None)
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        """The server's `GET /health`: what it serves (corpus, its checksum, passages, encoder)."""
        base = self.endpoint.removesuffix("/retrieve")
        return self._call("get", base + "/health", None)

    def check_corpus(self, corpus: Any) -> None:
        """InputError unless the server serves `corpus` (same checksum): answers would be about another."""
        info = self.health()
        theirs = info.get("corpus_checksum")
        if theirs is not None and theirs != corpus.checksum():
            raise InputError(
                f"the retrieval server at {self.url} serves corpus {info.get('corpus')!r} "
                f"(sha256 {str(theirs)[:12]}), not {corpus.name!r} (sha256 {corpus.checksum()[:12]})"
            )

    def _call(self, method: str, url: str, body: dict | None) -> Any:
        import httpx

        try:
            response = self._http().request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise RetrieverUnavailableError(
                f"the retrieval server at {self.url} cannot be reached ({type(exc).__name__}: {exc}); "
                "is `reasonrag serve` running there?"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error") or response.text
            except (ValueError, AttributeError):
                message = response.text
            raise InputError(f"the retrieval server at {self.url} refused the request: {message[:500]}")
        try:
            return response.json()
        except ValueError:
            raise RetrieverUnavailableError(f"the server at {self.url} did not answer with JSON") from None

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """One round trip: the top k of every query, as hits."""
        if isinstance(queries, str):
            raise InputError("retrieve takes a list of queries")
        if not queries:
            return []
        body = {"queries": list(queries), "topk": int(k), "return_scores": True}
        answer = self._call("post", self.endpoint, body)
        try:
            result = answer["result"]
            return [
                [Hit(passage=document_passage(item["document"]), score=float(item["score"])) for item in hits]
                for hits in result
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise RetrieverUnavailableError(
                f"the server at {self.url} did not answer with Search-R1's /retrieve result ({exc})"
            ) from None

    # -- the reasonrag search backend ---------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, exclude: Iterable[str] = ()) -> list[Hit]:
        return self.search_batch([query], k, exclude)[0]

    def search_batch(
        self, queries: Sequence[str], k: int | None = None, exclude: Iterable[str] = ()
    ) -> list[list[Hit]]:
        k = self.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        exclude = set(exclude)
        results = self.retrieve(list(queries), int(k) + len(exclude))
        return [[h for h in hits if h.passage.id not in exclude][:k] for hits in results]

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """Embed texts locally with `encoder_name` (the default encoder), for components that embed text."""
        return encode(texts, load_encoder(self.encoder_name))

    # -- langchain-core ---------------------------------------------------------------------------------
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return [
            Document(
                page_content=h.passage.text,
                metadata={"id": h.passage.id, "title": h.passage.title, "score": h.score},
            )
            for h in self.search(query, k=self.k if k is None else k)
        ]

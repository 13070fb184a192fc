"""A retrieval server: one index in one process, searched over HTTP by any number of agents and workers.

The contract is Search-R1's (`search_r1/search/retrieval_server.py`), so its training and inference code
can use our index as is:

    POST /retrieve  {"queries": ["...", ...], "topk": 3, "return_scores": true}
    ->  {"result": [[{"document": {"id", "contents", "title", "text", "sentences"}, "score": 0.71}, ...], ...]}

(without `return_scores`, each result is the list of documents alone). `contents` is FlashRAG's
"title\\ntext"; `sentences` is our addition, so a `RemoteRetriever` rebuilds exactly the passages a local
index would return. `GET /health` says what is served. A malformed request gets a 4xx whose JSON body has
a one-line `error`, never a 500. Built on FastAPI (request validation by pydantic) and uvicorn, the
optional extra `reasonrag[serve]`.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasonrag.data.types import Passage
from reasonrag.errors import MissingDependencyError, ReasonRAGError

INSTALL_SERVE = 'pip install "reasonrag[serve]"'
MAX_QUERIES = 1024  # queries per request: a bound on one request's memory and time
MAX_TOPK = 1000
MAX_QUERY_CHARS = 4000


class RetrieveRequest(BaseModel):
    """The body of `POST /retrieve` (Search-R1's); unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(max_length=MAX_QUERIES)
    topk: int | None = Field(default=None, ge=1, le=MAX_TOPK)
    return_scores: bool = False


def passage_document(passage: Passage) -> dict[str, Any]:
    """A passage as the server sends it: the FlashRAG corpus line plus title, text and sentences."""
    return {
        "id": passage.id,
        "contents": passage.contents,
        "title": passage.title,
        "text": passage.text,
        "sentences": list(passage.sentences),
    }


def document_passage(document: dict[str, Any]) -> Passage:
    """The passage a server document describes (ours, or any Search-R1 server's `{"id", "contents"}`)."""
    from reasonrag.data.corpus import split_sentences  # lazy: the corpus module is not needed otherwise

    if not isinstance(document, dict) or "id" not in document:
        raise ValueError(f"a retrieved document is an object with an id, got {str(document)[:200]!r}")
    if "title" in document or "text" in document:
        title, text = str(document.get("title") or ""), str(document.get("text") or "")
    else:
        title, _, text = str(document.get("contents") or "").partition("\n")
        if not text:
            title, text = "", title
    sentences = document.get("sentences")
    if isinstance(sentences, list) and sentences and all(isinstance(s, str) for s in sentences):
        parts = tuple(sentences)
    else:
        parts = tuple(s for s in split_sentences(text) if s.strip()) or (text or title,)
    return Passage(id=str(document["id"]), title=title, text=text, sentences=parts)


def make_app(retriever: Any, *, name: str = "") -> Any:
    """The FastAPI app serving `retriever` (a DenseRetriever, or anything with `search_batch`)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError:
        raise MissingDependencyError(
            f"`reasonrag serve` needs FastAPI and uvicorn: {INSTALL_SERVE}"
        ) from None

    lock = threading.Lock()  # the encoder and FAISS run one batch at a time; requests queue here
    app = FastAPI(title="reasonrag retrieval server", summary="Search-R1's /retrieve over a reasonrag index")
    default_k = int(getattr(retriever, "k", 3))
    count = len(getattr(retriever, "passages", ()))
    corpus = getattr(retriever, "corpus", None)
    checksum = corpus.checksum() if corpus is not None else None

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(422, "bad request: " + "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, Any]:
        index = getattr(retriever, "index", None)
        manifest = getattr(index, "manifest", {}) or {}
        return {
            "status": "ok",
            "corpus": name,
            "corpus_checksum": checksum,
            "passages": count,
            "kind": manifest.get("kind"),
            "encoder": (manifest.get("encoder") or {}).get("name"),
            "default_topk": default_k,
        }

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest) -> Any:
        for i, query in enumerate(request.queries):
            if not query.strip():
                return error(422, f"bad request: queries.{i} is empty")
            if len(query) > MAX_QUERY_CHARS:
                return error(422, f"bad request: queries.{i} is longer than {MAX_QUERY_CHARS} characters")
        k = request.topk or default_k
        try:
            with lock:
                results = retriever.search_batch(request.queries, k=k) if request.queries else []
        except ReasonRAGError as exc:
            return error(400, f"[{exc.code}] {exc}")
        out = []
        for hits in results:
            if request.return_scores:
                out.append([{"document": passage_document(h.passage), "score": h.score} for h in hits])
            else:
                out.append([passage_document(h.passage) for h in hits])
        return {"result": out}

    return app


def serve(retriever: Any, *, host: str = "127.0.0.1", port: int = 8000, name: str = "") -> None:
    """Serve `retriever` until interrupted (uvicorn, one process)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError(
            f"`reasonrag serve` needs FastAPI and uvicorn: {INSTALL_SERVE}"
        ) from None
    uvicorn.run(make_app(retriever, name=name), host=host, port=port, log_level="warning")

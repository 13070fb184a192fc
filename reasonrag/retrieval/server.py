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

import json
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


class QueryBatcher:
    """Concurrent requests' queries searched together: one encoder pass and one index search per batch.

    Each request puts its queries in a queue and takes the search lock. Whoever holds the lock searches
    everything waiting at that moment (queries of equal `k` together, at most `max_queries` a batch) in
    one `search_batch` call and hands every request its own results; a request whose results came while
    it waited for the lock just returns them. Under load, requests arrive while a batch runs and form the
    next one, so the encoder's fixed cost per call is shared, as Search-R1's server batches the queries of
    one request; a lone request waits for nothing. The search runs on the request threads themselves (no
    thread of its own), as the unbatched path does.
    """

    def __init__(self, retriever: Any, max_queries: int = 256) -> None:
        import queue

        self.retriever, self.max_queries = retriever, max_queries
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.batches = 0  # search_batch calls made
        self.searched = 0  # queries searched

    def search(self, queries: list[str], k: int) -> list:
        """The hits of each query, as `search_batch(queries, k)` gives them; errors come back raised."""
        from concurrent.futures import Future

        future: Future = Future()
        self._queue.put((list(queries), k, future))
        with self._lock:
            while not future.done():
                self._search_waiting()
        return future.result()

    def _search_waiting(self) -> None:
        """One batch of what waits now: the oldest request's `k`, as many queries as fit."""
        import queue

        waiting = []
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        k = waiting[0][1]
        batch, size, later = [], 0, []
        for item in waiting:
            if item[1] == k and (not batch or size + len(item[0]) <= self.max_queries):
                batch.append(item)
                size += len(item[0])
            else:
                later.append(item)
        for item in later:  # the next holder of the lock takes them
            self._queue.put(item)
        try:
            results = self.retriever.search_batch([q for item in batch for q in item[0]], k=k)
        except Exception as exc:  # noqa: BLE001 - each request gets the error to report
            for _, _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.searched += size
        pos = 0
        for queries, _, future in batch:
            future.set_result(results[pos : pos + len(queries)])
            pos += len(queries)


def make_app(retriever: Any, *, name: str = "", batch: bool = True) -> Any:
    """The FastAPI app serving `retriever` (a DenseRetriever, or anything with `search_batch`).

    With `batch` (the default) the queries of concurrent requests are searched together
    (`QueryBatcher`); without it each request searches alone, one at a time."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from starlette.exceptions import HTTPException
    except ImportError:
        raise MissingDependencyError(
            f"`reasonrag serve` needs FastAPI and uvicorn: {INSTALL_SERVE}"
        ) from None

    lock = threading.Lock()  # unbatched: the encoder and FAISS run one request at a time
    batcher = QueryBatcher(retriever) if batch else None
    app = FastAPI(title="reasonrag retrieval server", summary="Search-R1's /retrieve over a reasonrag index")
    default_k = int(getattr(retriever, "k", 3))
    count = len(getattr(retriever, "passages", ()))
    corpus = getattr(retriever, "corpus", None)
    checksum = corpus.checksum() if corpus is not None else None

    cached: dict[str, str] = {}

    def document_json(passage: Passage) -> str:
        """`json.dumps(passage_document(passage))`, kept per passage (at most 200,000 of them)."""
        text = cached.get(passage.id)
        if text is None:
            text = json.dumps(passage_document(passage), ensure_ascii=False)
            if len(cached) < 200_000:
                cached[passage.id] = text
        return text

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
            if not request.queries:
                results = []
            elif batcher is not None:
                results = batcher.search(request.queries, k)
            else:
                with lock:
                    results = retriever.search_batch(request.queries, k=k)
        except ReasonRAGError as exc:
            return error(400, f"[{exc.code}] {exc}")
        # JSON written directly from each passage's cached JSON text: FastAPI's generic encoder walks
        # every document field by field, and the same passages are sent again and again.
        rows = []
        for hits in results:
            if request.return_scores:
                docs = [
                    f'{{"document": {document_json(h.passage)}, "score": {json.dumps(h.score)}}}'
                    for h in hits
                ]
            else:
                docs = [document_json(h.passage) for h in hits]
            rows.append("[" + ", ".join(docs) + "]")
        return Response('{"result": [' + ", ".join(rows) + "]}", media_type="application/json")

    return app


def listen(host: str, port: int) -> Any:
    """A socket bound to host:port, or a one-line PortInUseError: checked before any model loads."""
    import errno
    import socket

    from reasonrag.errors import PortInUseError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is in use: stop what listens there, or give --port N"
            ) from None
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_app(app: Any, sock: Any) -> None:
    """Serve an ASGI app on a bound socket until interrupted (uvicorn, one process)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError(
            f"`reasonrag serve` needs FastAPI and uvicorn: {INSTALL_SERVE}"
        ) from None
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def serve(
    retriever: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "",
    batch: bool = True,
    sock: Any = None,
) -> None:
    """Serve `retriever` until interrupted (uvicorn, one process), on `sock` if already bound."""
    run_app(make_app(retriever, name=name, batch=batch), sock if sock is not None else listen(host, port))

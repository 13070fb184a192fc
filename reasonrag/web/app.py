"""The web page of `reasonrag ui`: watch the agent's scored steps arrive, reject one, browse predictions.

The page (`static/`) is plain HTML, CSS and JavaScript shipped in the package: nothing is fetched from
elsewhere, so it works offline. Its server is this FastAPI app over one compiled agent graph with a
checkpointer:

    GET  /                 the page
    GET  /api/info         what is served: corpus, agent options, whether steps are scored
    POST /api/ask          {"question"} -> a stream of JSON lines: {"thread"}, then {"step"} and
                           {"backtrack"} as they happen, then {"final"} (answer, path, alternatives per step)
    POST /api/reject       {"thread", "step"} -> the same stream, from the rejected step's branch point

Predictions files are read in the browser (the file never leaves it). Every passage and model text is put
into the page as text, never as markup, so a corpus cannot inject HTML or script.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasonrag.data.limits import MAX_QUESTION_CHARS
from reasonrag.errors import MissingDependencyError, ReasonRAGError

INSTALL_UI = 'pip install "reasonrag[serve]"'
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


class Ask(BaseModel):
    """The body of `POST /api/ask`."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class Reject(BaseModel):
    """The body of `POST /api/reject`: the thread a question was asked on, and the step (from 1)."""

    model_config = ConfigDict(extra="forbid")
    thread: str = Field(min_length=1, max_length=100)
    step: int = Field(ge=1)


def static_text(name: str) -> str:
    return resources.files("reasonrag.web").joinpath("static", name).read_text(encoding="utf-8")


def _alternatives(branch: Mapping[str, Any], floor: float) -> int:
    return sum(
        1 for j, c in enumerate(branch["candidates"]) if j not in branch["tried"] and c["prob"] >= floor
    )


def final_event(values: Mapping[str, Any], floor: float) -> dict[str, Any]:
    """The end of a run as the page shows it: answer, path score, and which steps can still be rejected."""
    steps = values.get("steps") or []
    branches = values.get("branches") or []
    return {
        "answer": values.get("answer", ""),
        "status": values.get("status"),
        "path_score": values.get("path_score"),
        "backtracks": values.get("backtracks", 0),
        "selected_from": values.get("selected_from"),
        "steps": steps,
        "alternatives": [_alternatives(b, floor) for b in branches] if len(branches) == len(steps) else [],
        "abandoned": [
            {"from_step": a["from_step"], "reason": a["reason"], "path_score": a.get("path_score")}
            for a in values.get("abandoned") or []
        ],
    }


def make_ui_app(graph: Any, *, info: Mapping[str, Any], recursion_limit: int, floor: float = 0.02) -> Any:
    """The FastAPI app of the page over `graph` (compiled with a checkpointer)."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    except ImportError:
        raise MissingDependencyError(f"`reasonrag ui` needs FastAPI and uvicorn: {INSTALL_UI}") from None

    app = FastAPI(title="reasonrag ui")
    pages = {name: static_text(name) for name in ("index.html", *STATIC_FILES)}

    def run(thread: str, inputs: dict | None) -> Iterator[bytes]:
        config = {"configurable": {"thread_id": thread}, "recursion_limit": recursion_limit}
        yield _line({"thread": thread})
        try:
            for chunk in graph.stream(inputs, config, stream_mode="custom"):
                yield _line(chunk)
            yield _line({"final": final_event(graph.get_state(config).values, floor)})
        except ReasonRAGError as exc:
            yield _line({"error": f"[{exc.code}] {exc}"})

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return pages["index.html"]

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse(status_code=404, content={"error": f"no file {name!r}"})
        return Response(pages[name], media_type=STATIC_FILES[name])

    @app.get("/api/info")
    def api_info() -> dict[str, Any]:
        return dict(info)

    @app.post("/api/ask")
    def ask(body: Ask) -> StreamingResponse:
        if not body.question.strip():
            return JSONResponse(status_code=422, content={"error": "the question is empty"})
        stream = run(uuid.uuid4().hex, {"question": body.question.strip()})
        return StreamingResponse(stream, media_type="application/x-ndjson")

    @app.post("/api/reject")
    def reject(body: Reject) -> StreamingResponse:
        config = {"configurable": {"thread_id": body.thread}}
        if not (graph.get_state(config).values or {}).get("steps"):
            return JSONResponse(
                status_code=404, content={"error": f"no question was asked on {body.thread!r}"}
            )
        return StreamingResponse(
            run(body.thread, {"reject_step": body.step}), media_type="application/x-ndjson"
        )

    return app


def _line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")

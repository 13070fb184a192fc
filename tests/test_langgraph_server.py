"""The agent on the LangGraph Agent Server: `langgraph dev` serves langgraph.json offline, and a client
drives it with langgraph-sdk as it would any graph: threads, streamed runs with the scored steps as custom
events, the final state, a clean second question on the same thread, state history, a step rejected by
forking from an earlier checkpoint, and 8 runs at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "langgraph_sdk", reason='the Agent Server tests need the server extra: "reasonrag[server]"'
)
pytest.importorskip(
    "langgraph_api", reason='the Agent Server tests need the server extra: "reasonrag[server]"'
)

import httpx  # noqa: E402
from langgraph_sdk import get_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
Q1 = "Who wrote the novel The Quiet Orchard?"
Q2 = "Who directed the film Harbor Lights?"
CONFIG = {"configurable": {"corpus": str(DATA / "tiny_corpus.jsonl"), "k": 3, "max_hops": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`langgraph dev` on a free port of 127.0.0.1, as a user starts it from the repository root."""
    langgraph = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    assert langgraph, "the server extra installs the langgraph command"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    work = tmp_path_factory.mktemp("langgraph")
    env = dict(
        os.environ,
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        REASONRAG_CACHE=str(work / "cache"),
    )
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port), "--n-jobs-per-worker", "8"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (work / "server.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        pytest.fail("langgraph dev did not start: " + (work / "server.log").read_text()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


async def _run(client, thread_id: str, **kwargs) -> tuple[list[dict], list[str]]:
    """Stream one run: the custom events and every event's kind."""
    custom, kinds = [], []
    async for part in client.runs.stream(
        thread_id, "reasonrag", config=CONFIG, stream_mode=["custom", "values"], **kwargs
    ):
        kinds.append(part.event)
        assert part.event != "error", part.data
        if part.event.startswith("custom"):
            custom.append(part.data)
    return custom, kinds


def test_a_client_streams_scored_steps_reads_state_and_history_and_rejects_a_step(server):
    async def scenario() -> None:
        client = get_client(url=server)
        thread = (await client.threads.create())["thread_id"]
        custom, _ = await _run(client, thread, input={"question": Q1})
        steps = [c["step"] for c in custom if "step" in c]
        assert [s["stage"] for s in steps[:3]] == ["retrieve", "extract", "synthesize"]
        assert all(isinstance(s["score"], float) for s in steps)  # the shipped PRM scored each step

        state = (await client.threads.get_state(thread))["values"]
        assert state["answer"] == "Tomas Varga" and state["status"] == "answered"
        assert [s["action"] for s in state["steps"]] == [s["action"] for s in steps]
        assert state["backtracks"] == 0 and all(s["score"] is not None for s in state["steps"])

        history = await client.threads.get_history(thread, limit=100)
        lengths = [len(h["values"].get("steps") or []) for h in history]
        assert max(lengths) == len(steps) and 0 in lengths  # a checkpoint after every step, newest first

        # Reject the first step that has an alternative, from the checkpoint just after it: a fork.
        n = 1 + next(
            i
            for i, b in enumerate(state["branches"])
            if any(j not in b["tried"] and c["prob"] >= 0.02 for j, c in enumerate(b["candidates"]))
        )
        after = next(h for h in history if len(h["values"].get("steps") or []) == n)
        custom, _ = await _run(
            client, thread, input={"reject_step": n}, checkpoint_id=after["checkpoint"]["checkpoint_id"]
        )
        assert any("backtrack" in c for c in custom)
        forked = (await client.threads.get_state(thread))["values"]
        assert forked["backtracks"] == 1 and forked["status"] in ("answered", "insufficient")
        assert forked["steps"][: n - 1] == state["steps"][: n - 1]
        assert forked["steps"][n - 1]["action"] != state["steps"][n - 1]["action"]
        assert forked["abandoned"][0]["reason"] == "rejected by the user"

        # A second question on the same thread starts clean.
        await _run(client, thread, input={"question": Q2})
        second = (await client.threads.get_state(thread))["values"]
        assert second["question"] == Q2 and second["backtracks"] == 0 and not second["abandoned"]
        assert second["steps"][0]["action"] == Q2

    asyncio.run(scenario())


def test_eight_runs_at_once_all_answer_as_one_run_does(server):
    async def scenario() -> list[str]:
        client = get_client(url=server)
        threads = [(await client.threads.create())["thread_id"] for _ in range(8)]
        runs = [
            client.runs.wait(t, "reasonrag", input={"question": Q1 if i % 2 else Q2}, config=CONFIG)
            for i, t in enumerate(threads)
        ]
        return [r["answer"] for r in await asyncio.gather(*runs)]

    answers = asyncio.run(scenario())
    assert answers[1::2] == ["Tomas Varga"] * 4
    assert len(set(answers[0::2])) == 1


def test_an_option_the_server_does_not_serve_fails_the_run_with_its_reason(server):
    async def scenario() -> dict:
        client = get_client(url=server)
        thread = (await client.threads.create())["thread_id"]
        config = {"configurable": {**CONFIG["configurable"], "llm": "openai:gpt-4o-mini"}}
        return await client.runs.wait(
            thread, "reasonrag", input={"question": Q1}, config=config, raise_error=False
        )

    result = asyncio.run(scenario())
    assert "not served" in str(result)

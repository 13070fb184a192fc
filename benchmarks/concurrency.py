"""`eval --concurrency 8` against `--concurrency 1` with a language model that takes its time to answer.

    python benchmarks/concurrency.py --limit 24 --sleep 0.5 --out benchmarks/results/concurrency.json

The policy is a scripted chat model (tests/llm_fakes.py: `plain_agent`, whose reply depends on the prompt
alone) that waits `--sleep` seconds per request, as a model server does. It is reached two ways:

- in process (`--llm sleepy:plain`, a registered LangChain chat model), and
- over HTTP through LangChain's OpenAI client (`--llm openai:plain --policy-option base_url=...`) from a
  stand-in OpenAI-compatible server on 127.0.0.1 (FastAPI: `POST /v1/chat/completions`, honouring `n`),
  which is how a vLLM server is used.

Each way runs the real `reasonrag eval` in this process (after a 2-question warm-up that loads the corpus,
index and models) on the same questions with --concurrency 1, 8 and 1 again, back to back, and reports
the ratio of the mean one-at-a-time wall time to the concurrent one; the predictions of the two must be equal (timings aside). `--prm` adds a
run with the shipped PRM, whose CPU work runs one step at a time behind a lock and caps the gain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def openai_server(respond, seconds: float):
    """A stand-in OpenAI-compatible chat server: the reply of `respond` to the prompt, after `seconds`."""
    import uvicorn
    from fastapi import FastAPI
    from langchain_core.messages import HumanMessage, SystemMessage
    from llm_fakes import stage_of

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(body: dict) -> dict:
        await asyncio.sleep(seconds)
        messages = [
            (SystemMessage if m["role"] == "system" else HumanMessage)(content=m["content"])
            for m in body["messages"]
        ]
        text = respond(stage_of(messages), messages[1].content if len(messages) > 1 else "", 0)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i in range(int(body.get("n") or 1))
        ]
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "plain"),
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def run_eval(argv: list[str]) -> tuple[dict, float]:
    from reasonrag.cli.main import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"reasonrag {' '.join(argv)} failed ({code})")
    return json.loads(out.getvalue().strip().splitlines()[-1]), seconds


def predictions(path: Path) -> list[dict]:
    drop = {"seconds"}
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "id" not in record:  # a header line
            continue
        record = {k: v for k, v in record.items() if k not in drop}
        record["steps"] = [{k: v for k, v in s.items() if k != "seconds"} for s in record.get("steps", [])]
        rows.append(record)
    return sorted(rows, key=lambda r: r["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="hotpotqa")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds per model request")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--prm", action="store_true", help="also run with the shipped PRM scoring every step")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("OPENAI_API_KEY", "not-needed-by-the-stand-in-server")
    from llm_fakes import plain_agent, register_scripted, sleeping

    from reasonrag.cli.options import quiet_libraries

    quiet_libraries()
    register_scripted("sleepy", sleeping(plain_agent, args.sleep))
    server, base_url = openai_server(plain_agent, args.sleep)
    load_before = os.getloadavg()
    common = ["eval", "--corpus", args.corpus, "--split", args.split, "--limit", str(args.limit)]
    common += ["--max-hops", "2", "--json", "--no-progress"]
    ways = [
        ("in process", ["--llm", "sleepy:plain", "--no-prm"]),
        (
            "OpenAI client over HTTP",
            ["--llm", "openai:plain", "--policy-option", f"base_url={base_url}", "--no-prm"],
        ),
    ]
    if args.prm:
        ways.append(("in process, shipped PRM", ["--llm", "sleepy:plain"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in ways:
            times, outputs = {}, {}
            warm = [a if a != str(args.limit) else "2" for a in common]  # loads corpus, index and models once
            run_eval([*warm, *extra, "--predictions", str(Path(tmp) / f"warm-{len(rows)}.jsonl")])
            for i, n in enumerate((1, args.concurrency, 1)):  # 1, N, 1: drift in load hits both sides
                path = Path(tmp) / f"{len(rows)}-{i}.jsonl"
                summary, seconds = run_eval(
                    [*common, *extra, "--concurrency", str(n), "--predictions", str(path)]
                )
                times.setdefault(n, []).append(seconds)
                outputs[i] = predictions(path)
            alone = sum(times[1]) / len(times[1])
            rows.append(
                {
                    "policy": name,
                    "questions": summary["n"],
                    "em": summary["em"],
                    "seconds_concurrency_1": [round(t, 1) for t in times[1]],
                    f"seconds_concurrency_{args.concurrency}": round(times[args.concurrency][0], 1),
                    "speedup": round(alone / times[args.concurrency][0], 2),
                    "same_predictions": outputs[0] == outputs[1] == outputs[2],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    server.should_exit = True
    result = {
        "benchmark": "concurrency",
        "command": "python benchmarks/concurrency.py " + " ".join(sys.argv[1:]),
        "sleep_seconds_per_request": args.sleep,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load on `reasonrag serve`: many concurrent clients, one query a request, batched against unbatched.

    python benchmarks/serve_load.py --corpus hotpotqa --clients 32 --requests 200 \
        --out benchmarks/results/serve_load.json

For each mode the real command runs in its own process (`reasonrag serve`, then `reasonrag serve
--no-batch`) and `--clients` asyncio clients in this process each send `--requests` requests one after the
other (`POST /retrieve`, one question each, topk 5). Reported per mode: requests sent, answered, errors
and lost (sent with no answer), throughput, p50 / p99 latency, and the CPU time per request of the
server process and of the clients (the server's alone is its cost with the clients on other machines).
Both modes must return the same documents for the same query (checked on the first 50 questions). Clients and server share the machine's
cores, as they would on one laptop: run it alone (through ../shared/bin/heavy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_server(corpus: str, batch: bool) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "reasonrag", "serve", "--corpus", corpus, "--port", "0", "-k", "5"]
    proc = subprocess.Popen(cmd + ([] if batch else ["--no-batch"]), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("reasonrag serve exited before serving")
        found = re.search(r"at (http://\S+)/retrieve", line)
        if found:
            url = found.group(1)
            break
    else:
        raise RuntimeError("reasonrag serve did not start")
    while True:  # the line is printed before uvicorn accepts connections
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)


async def load(url: str, queries: list[str], clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors, lost = 0, 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client(c: int) -> None:
            nonlocal errors, lost
            for r in range(requests):
                query = queries[(c * requests + r) % len(queries)]
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/retrieve", json={"queries": [query], "topk": 5})
                except httpx.HTTPError:
                    lost += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200 or len(resp.json()["result"][0]) != 5:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": clients * requests,
        "answered": len(latencies),
        "errors": errors,
        "lost": lost,
        "seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def documents(url: str, queries: list[str]) -> list[list[str]]:
    out = []
    for q in queries:
        resp = httpx.post(f"{url}/retrieve", json={"queries": [q], "topk": 5}, timeout=60)
        out.append([d["id"] for d in resp.json()["result"][0]])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="hotpotqa")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from reasonrag.data.corpus import Corpus

    corpus = Corpus.load(args.corpus)
    try:
        queries = [q.question for q in corpus.questions(None)]
    except Exception:  # noqa: BLE001 - a corpus without questions: its passages' titles are the queries
        queries = [p.title for p in corpus.passages]
    result = {
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "clients": args.clients,
        "requests_per_client": args.requests,
    }
    docs = {}
    modes = (("batched", True), ("unbatched", False))
    for mode, batch in modes[::-1] if os.environ.get("REVERSE") else modes:
        proc, url = start_server(args.corpus, batch)
        try:
            docs[mode] = documents(url, queries[:50])
            result[f"load_before_{mode}"] = round(os.getloadavg()[0], 2)
            server0, client0 = cpu_seconds(proc.pid), time.process_time()
            result[mode] = asyncio.run(load(url, queries, args.clients, args.requests))
            # The clients share the cores with the server here: the server's own CPU per request is
            # its cost with the clients elsewhere, and bounds its throughput there.
            n = max(1, result[mode]["answered"])
            server_ms = 1000 * (cpu_seconds(proc.pid) - server0) / n
            result[mode]["server_cpu_ms_per_request"] = round(server_ms, 2)
            result[mode]["client_cpu_ms_per_request"] = round(1000 * (time.process_time() - client0) / n, 2)
            result[mode]["server_capacity_requests_per_second"] = round(
                1000 * (os.cpu_count() or 1) / max(server_ms, 1e-6), 1
            )
            print(mode, json.dumps(result[mode]), file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result["same_documents"] = docs["batched"] == docs["unbatched"]
    result["speedup"] = round(
        result["batched"]["requests_per_second"] / result["unbatched"]["requests_per_second"], 2
    )
    result["speedup_server_cpu"] = round(
        result["unbatched"]["server_cpu_ms_per_request"] / result["batched"]["server_cpu_ms_per_request"], 2
    )
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

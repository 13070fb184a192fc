"""The agent graph for the LangGraph Agent Server: `langgraph.json` at the repository root names `make_graph`.

    pip install "reasonrag[server]"
    langgraph dev --no-browser          # in-memory runtime, offline; http://127.0.0.1:2024

The server calls `make_graph(config)` for each run. The run's `configurable` holds the agent options by
their `reasonrag ask` names (`corpus`, `k`, `max_hops`, `critic`, `stop_threshold`, `prm`, `no_prm`,
`policy_option`, ...), so a client chooses the corpus and search per run, exactly as on the command line;
one agent is built per distinct set of options and kept for later runs. The server brings its own
checkpointer: threads, state history and forks work as for any LangGraph graph. Each step is streamed as
a custom event (`stream_mode="custom"`: `{"step": {...}}`, `{"backtrack": {...}}`); a run whose input is
`{"reject_step": N}` rejects step N of the thread's last path and the agent goes on from that branch point
(from the thread's latest checkpoint, or from an earlier one given as the run's `checkpoint_id`).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Mapping
from typing import Any

from reasonrag.cli.checks import check_agent_options
from reasonrag.cli.options import add_agent_options, build_agent_from_args
from reasonrag.errors import InputError, ReasonRAGError

# Options of the agent group that make no sense for a served graph.
_NOT_SERVED = {"llm", "judge", "retriever_url", "encoder", "best_of", "beam", "sample", "seed"}
_graphs: dict[tuple, Any] = {}
_lock = threading.Lock()


class ServedOptionError(ValueError):
    """A bad agent option, as the server reports it: it shows the messages of built-in errors only."""


class _Parser(argparse.ArgumentParser):
    """A bad option value is the run's error (InputError), not the server's exit."""

    def error(self, message: str) -> Any:
        raise InputError(f"configurable: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="configurable", add_help=False, allow_abbrev=False)
    add_agent_options(p)
    return p


def _argv(configurable: Mapping[str, Any], parser: argparse.ArgumentParser) -> list[str]:
    """The `reasonrag ask` arguments that a run's `configurable` stands for (other keys are the server's)."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    argv: list[str] = []
    for key in sorted(configurable):
        value = configurable[key]
        if key in _NOT_SERVED:
            raise InputError(f"the agent option {key!r} is not served: start a `reasonrag` command for it")
        if key not in actions:  # the server's own keys (thread_id, checkpoint_ns, headers, ...)
            continue
        flag = actions[key].option_strings[-1]
        if isinstance(actions[key], argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(actions[key], argparse.BooleanOptionalAction):
            on, off = actions[key].option_strings[:2]
            argv += [on if value else off] if value is not None else []
        elif isinstance(value, (list, tuple)):
            if actions[key].nargs in ("+", "*"):
                argv += [flag, *(str(v) for v in value)]
            else:
                for v in value:
                    argv += [flag, str(v)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def graph_for(configurable: Mapping[str, Any]) -> Any:
    """The compiled agent for these options (built once, then shared by every run that asks for them)."""
    parser = _parser()
    argv = _argv(configurable, parser)
    key = tuple(argv)
    with _lock:
        if key not in _graphs:
            args = parser.parse_args(argv)
            check_agent_options(args)
            _, graph = build_agent_from_args(args, concurrent=True, branch_points=True)
            _graphs[key] = graph
        return _graphs[key]


async def make_graph(config: Mapping[str, Any] | None = None) -> Any:
    """The graph factory `langgraph.json` names: the agent the run's `configurable` options describe.

    Loading an index and models blocks, so it runs on a worker thread, off the server's event loop."""
    import asyncio

    try:
        return await asyncio.to_thread(graph_for, dict((config or {}).get("configurable") or {}))
    except ReasonRAGError as exc:
        raise ServedOptionError(f"[{exc.code}] {exc}") from None

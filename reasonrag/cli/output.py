"""How a trajectory is printed for a person: each step, backtracks, best-of-N samples, the answer.

Every piece of text that came from a corpus or a model goes through `terminal_text`, so a passage cannot
send escape sequences or bidi overrides to the terminal (`--json` output is not affected).
"""

from __future__ import annotations

import sys

from reasonrag.data.terminal import terminal_text as t


def _fmt_score(step: dict) -> str:
    return "" if step.get("score") is None else f"  score={step['score']:.2f}"


def _print_step(step: dict, out, mark: str = "") -> None:
    head = f"{mark}[hop {step['hop'] + 1}] {step['stage']:<10}"
    tail = f"(p={step['prob']:.2f}{_fmt_score(step)})"
    pad = " " * (14 + len(mark))
    if step["stage"] == "retrieve":
        print(f"{head} query: {step['action']!r} {tail}", file=out)
        # Several queries' results are merged in turns; a person reads them best first.
        ranked = sorted(step["observation"], key=lambda p: -float(p.get("score") or 0.0))
        for i, p in enumerate(ranked, 1):
            print(f"{pad}{i}. {t(p['title'])}  ({p['score']:.3f})", file=out)
    elif step["stage"] == "extract":
        print(f"{head} kept {len(step['observation'])} sentence(s) {tail}", file=out)
        for s in step["observation"]:
            print(f"{pad}- [{t(s['title'])}] {t(s['text'])}", file=out)
    else:
        print(f"{head} -> {t(step['observation'])} {tail}", file=out)


def print_trajectory(state: dict, out=None) -> None:
    """Each step readably (stage, query, evidence with passage titles, the answer), backtracks included."""
    out = out or sys.stdout
    if state.get("trace"):
        for event in state["trace"]:
            if event.get("event") == "backtrack":
                print(
                    f"  <- backtrack: {t(event['reason'])}; back to step {event['to_step']} "
                    f"({event['stage']}) to try {event['now_trying']!r}",
                    file=out,
                )
            else:
                _print_step(event, out)
    else:
        for step in state.get("steps", []):
            _print_step(step, out)
    if state.get("selected_from") not in (None, "path"):
        print(f"\n(no backtrack left; kept the answer of the {t(state['selected_from'])})", file=out)
    if state.get("samples"):
        print(f"\nbest of {len(state['samples'])} by {state.get('select')}:", file=out)
        for i, smp in enumerate(state["samples"]):
            mark = "*" if i == state.get("selected") else " "
            low = "-" if smp.get("min") is None else f"{smp['min']:.2f}"
            print(f"  {mark} {smp['answer']!r}  (min step score {low})", file=out)
    print(f"\nAnswer: {t(state.get('answer', ''))}", file=out)

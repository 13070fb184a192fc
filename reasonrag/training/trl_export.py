"""Step labels as TRL datasets: stepwise supervision for a PRM, process-level preference pairs for DPO.

`reasonrag export --labels FILE --format trl-prm|trl-dpo --out DIR` writes `DIR/train.jsonl` (plus a
`manifest.json` saying what went in), which `datasets.load_dataset("json", data_files=...)` reads and
TRL's trainers take as they are:

trl-prm  TRL's stepwise-supervision format, one labeled trajectory a row: `prompt` (the question),
         `completions` (one text per step, as our PRMs read it), `labels` (one bool per step: some
         rollout from it succeeded), and `stages` kept beside them, plus the MC `values`. A trajectory
         with an unlabeled step (explored without rollouts) is left out: TRL needs a label per step.
trl-dpo  TRL's preference format, one pair a row: `prompt`, `chosen`, `rejected`. The pairs are the ones
         our own DPO trains on (`reasonrag.training.policy_training`): sibling actions from the same
         state whose SPRE (or MC) values differ, and answer candidates of the same synthesize step ranked
         by their outcome against the gold answer. The prompt is exactly the LLM policy's prompt for that
         state and the completions are the tagged replies that decide each action, so a model trained
         on them drives `--llm` directly. Conversational (chat messages, for an instruct model: TRL
         applies its chat template) or standard (plain text, for a base model).

Every row keeps `stage`, `question`, `golden_answers` and `context` (the steps before, as JSON), so the
same file feeds GRPO with our combined reward (`reasonrag.training.trl_reward`). The same labels give the
same files, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonrag.data.files import staged_directory, write_json
from reasonrag.errors import InputError
from reasonrag.llm.local import plain_prompt
from reasonrag.policies.chat_model import PRIMERS, stage_messages, view_of_decision
from reasonrag.policies.transformers_lm import target_completion
from reasonrag.prm.base import step_text
from reasonrag.training.policy_training import Pair, answer_pairs, preference_pairs

FORMATS = ("trl-prm", "trl-dpo")
STYLES = ("conversational", "standard")
PAIRS = ("sibling", "answer", "both")


def prm_rows(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict], int]:
    """(rows, trajectories left out for an unlabeled step) in TRL's stepwise-supervision format."""
    rows, skipped = [], 0
    for r in records:
        if any(label is None for label in r["labels"]):
            skipped += 1
            continue
        rows.append(
            {
                "prompt": r["question"],
                "completions": [step_text(s) for s in r["steps"]],
                "labels": [bool(label) for label in r["labels"]],
                "stages": [s["stage"] for s in r["steps"]],
                "values": r["values"],
                "id": r.get("id"),
                "question_id": r.get("question_id"),
            }
        )
    return rows, skipped


def _context(record: Mapping[str, Any], step_index: int) -> str:
    keep = ("stage", "action", "observation")
    return json.dumps([{k: s.get(k) for k in keep} for s in record["steps"][:step_index]], sort_keys=True)


def pair_row(pair: Pair, kind: str, record: Mapping[str, Any], *, style: str, max_evidence: int = 4) -> dict:
    """One DPO row: the policy's prompt for the pair's state, the replies that decide each action."""
    d = pair.decision
    view = view_of_decision(d)
    messages = stage_messages(view, max_evidence=max_evidence)
    primer = PRIMERS[d.stage]
    better, worse = (target_completion(view, d.candidates[i]) for i in (pair.better, pair.worse))
    if style == "conversational":
        prompt: Any = [{"role": role, "content": text} for role, text in messages]
        chosen: Any = [{"role": "assistant", "content": primer + better}]
        rejected: Any = [{"role": "assistant", "content": primer + worse}]
    else:
        prompt, chosen, rejected = plain_prompt(messages) + primer, better, worse
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "stage": d.stage,
        "pair": kind,
        "gap": round(pair.gap, 4),
        "question": d.question,
        "golden_answers": list(record.get("golden_answers") or []),
        "context": _context(record, int(d.meta["step"])),
        "question_id": record.get("question_id"),
    }


def dpo_rows(
    records: Sequence[Mapping[str, Any]],
    *,
    pairs: str = "both",
    style: str = "conversational",
    value: str = "spre",
    margin: float = 0.1,
    outcome: str = "em",
) -> list[dict]:
    """Process-level preference pairs (sibling and/or answer pairs), each state and pair once."""
    if pairs not in PAIRS:
        raise InputError(f"--pairs {pairs!r}: use one of {', '.join(PAIRS)}")
    if style not in STYLES:
        raise InputError(f"--style {style!r}: use one of {', '.join(STYLES)}")
    by_id = {r.get("id"): r for r in records}
    found: list[tuple[Pair, str]] = []
    if pairs in ("sibling", "both"):
        found += [(p, "sibling") for p in preference_pairs(records, value=value, margin=margin)]
    if pairs in ("answer", "both"):
        found += [(p, "answer") for p in answer_pairs(records, outcome=outcome, margin=margin)]
    rows, seen = [], set()
    for pair, kind in found:
        row = pair_row(pair, kind, by_id[pair.decision.meta["record"]], style=style)
        key = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def export_labels(
    records: Sequence[Mapping[str, Any]], out: str | Path, fmt: str, **options: Any
) -> dict[str, Any]:
    """Write `out/train.jsonl` and `out/manifest.json` (swapped in whole); returns the manifest."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    skipped = 0
    if fmt == "trl-prm":
        if options:
            raise InputError(f"{', '.join(sorted(options))}: options of trl-dpo, not of trl-prm")
        rows, skipped = prm_rows(records)
    else:
        rows = dpo_rows(records, **options)
    if not rows:
        why = (
            "every trajectory has an unlabeled step: label with rollouts (--completions K)"
            if fmt == "trl-prm"
            else "no sibling actions or answer candidates differ in value by the margin"
        )
        raise InputError(f"nothing to export as {fmt}: {why}")
    manifest = {
        "format": fmt,
        "rows": len(rows),
        "trajectories": len(records),
        "skipped_unlabeled": skipped,
        "options": options,
        "by_stage": _by_stage(rows, fmt),
    }
    if fmt == "trl-dpo":
        manifest["by_pair"] = {k: sum(r["pair"] == k for r in rows) for k in ("sibling", "answer")}
    with staged_directory(Path(out)) as tmp:
        with (tmp / "train.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_json(tmp / "manifest.json", manifest)
    return {**manifest, "out": str(out)}


def _by_stage(rows: list[dict], fmt: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for stage in row["stages"] if fmt == "trl-prm" else [row["stage"]]:
            counts[stage] = counts.get(stage, 0) + 1
    return counts

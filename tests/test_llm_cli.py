"""`--llm` and `--judge` on the command line: the same graph with a language model, and clear errors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from llm_fakes import harbor_lights_agent, hashed_judge, register_scripted

from reasonrag.cli.main import main

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")
Q = "Where was the director of the film Harbor Lights born?"


@pytest.fixture(autouse=True)
def _setup(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "llm-cli-cache"))
    register_scripted("scripted-harbor", harbor_lights_agent(("Enugu", "Enugu", "Lisbon")))
    register_scripted("scripted-judge", hashed_judge)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_ask_runs_the_graph_with_a_chat_model(capsys):
    code = main(["ask", Q, "--corpus", CORPUS, "-k", "1", "--llm", "scripted-harbor:m", "--no-prm", "--json"])
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert result["answer"] == "Enugu" and result["hops"] == 2
    assert result["steps"][3]["action"] == "Miriam Okafor birthplace"
    assert [c["text"] for c in result["steps"][-1]["candidates"]] == ["Enugu", "Lisbon"]


def test_ask_with_a_judge_scores_every_step_and_policy_options_reach_the_llm_policy(capsys):
    argv = [
        "ask",
        Q,
        "--corpus",
        CORPUS,
        "-k",
        "3",
        "--llm",
        "scripted-harbor:m",
        "--judge",
        "scripted-judge:h",
    ]
    assert main(argv + ["--policy-option", "n_candidates=1", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert all(0.0 <= s["score"] <= 1.0 for s in result["steps"])
    assert all(len(s["candidates"]) == 1 for s in result["steps"])  # one reply per stage: n_candidates=1
    assert main(argv + ["--policy-option", "keep_threshold=0.3"]) == 2  # a knob of the embedded policy only
    err = capsys.readouterr().err
    assert "keep_threshold" in err and "n_candidates" in err


def test_eval_runs_a_split_with_a_chat_model(capsys):
    argv = ["eval", "--corpus", CORPUS, "--questions", QUESTIONS, "--split", "dev", "-k", "1"]
    assert main(argv + ["--llm", "scripted-harbor:m", "--no-prm", "--json", "--no-progress"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert (
        summary["n"] == 2 and summary["em"] == 50.0
    )  # Harbor Lights right; the scripted model knows no other


def test_label_with_a_judge_writes_both_label_sources(tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    argv = [
        "label",
        "--out",
        str(out),
        "--corpus",
        CORPUS,
        "--questions",
        QUESTIONS,
        "--split",
        "dev",
        "--limit",
        "1",
    ]
    argv += [
        "--llm",
        "scripted-harbor:m",
        "--judge",
        "scripted-judge:h",
        "--trajectories",
        "3",
        "--completions",
        "2",
    ]
    assert main(argv + ["-k", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "judge vs MC labels" in printed and "agreement" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(len(r["judge"]) == len(r["values"]) for r in records)


def test_chat_takes_llm_too(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{Q}\n/quit\n"))
    argv = [
        "chat",
        "--corpus",
        CORPUS,
        "-k",
        "1",
        "--llm",
        "scripted-harbor:m",
        "--no-prm",
        "--db",
        str(tmp_path / "c.sqlite"),
    ]
    assert main(argv) == 0
    assert "Enugu" in capsys.readouterr().out


def test_missing_packages_and_models_are_one_line_errors(capsys, tmp_path):
    cases = [
        (
            ["--llm", "ollama:llama3.1"],
            "pip install",
        ),  # langchain-ollama (or langchain itself) is not installed
        (["--llm", f"hf:{tmp_path / 'no-model'}"], "no model directory"),
        (["--llm", "nosuchprovider:model"], ""),
        (["--judge", "hf:/x"], "no model directory"),
        (["--llm", f"gguf:{tmp_path / 'no.gguf'}"], "no GGUF file"),
        (["--judge", f"{tmp_path / 'no.gguf'}"], "no GGUF file"),
        (["--judge", "scripted-judge:h", "--prm", str(tmp_path)], "give one of them"),
    ]
    for extra, message in cases:
        code = main(["ask", Q, "--corpus", CORPUS, *extra])
        err = capsys.readouterr().err
        assert code == 2, extra
        assert err.startswith("reasonrag: error [") and err.count("\n") == 1 and message in err, err
        assert "Traceback" not in err


def test_an_unreachable_provider_is_one_line(capsys):
    def down(stage, text, i):
        raise ConnectionError("Connection refused")

    register_scripted("scripted-down", down)
    assert main(["ask", Q, "--corpus", CORPUS, "--llm", "scripted-down:m", "--no-prm"]) == 2
    err = capsys.readouterr().err
    assert "LLM_UNAVAILABLE" in err and "cannot be reached" in err and err.count("\n") == 1

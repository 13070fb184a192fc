"""Bad input a new user gives: one line `reasonrag: error [CODE]: ...`, exit 2, before any model loads."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from reasonrag.cli.main import main

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")
SHIPPED = Path(__file__).resolve().parents[1] / "reasonrag" / "weights"
Q = "Who wrote the novel The Quiet Orchard?"


class ModelLoaded(AssertionError):
    pass


@pytest.fixture
def no_models(monkeypatch, tmp_path_factory):
    """Any model load (a torch module built, an encoder fetched even from the cache, weights read) fails."""
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))

    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the inputs were checked")

    # Every module that binds load_encoder by name, all imported before any is patched (one imported after
    # would bind the stand-in, and get it "back" afterwards).
    modules = [
        importlib.import_module(f"reasonrag.retrieval.{m}")
        for m in ("encoder", "index", "retriever", "remote")
    ]
    for module in modules:
        monkeypatch.setattr(module, "load_encoder", refuse)
    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    monkeypatch.setattr("safetensors.torch.load_file", refuse)


def one_line_error(capsys, code: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"reasonrag: error [{code}]: "), lines[0]
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    return lines[0]


def usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return one_line_error(capsys, "USAGE")


# -- item 1: bounded options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", Q, "-k", "100000"], "-k/--k: must be between 1 and 100, got 100000"),
        (["ask", Q, "-k", "0"], "-k/--k: must be between 1 and 100, got 0"),
        (["ask", Q, "--best-of", "1000"], "--best-of: must be between 1 and 64"),
        (["ask", Q, "--max-hops", "11"], "--max-hops: must be between 1 and 10"),
        (["ask", Q, "--max-backtracks", "99"], "--max-backtracks: must be between 0 and 16"),
        (["ask", Q, "--threshold", "1.5"], "--threshold: must lie in [0, 1]"),
        (["ask", Q, "--threshold", "nan"], "--threshold: must lie in [0, 1]"),
        (["ask", Q, "--seed", "-1"], "--seed: must be between 0 and 4294967295"),
        (["ask", Q, "--best-of", "2", "--select", "combined", "--alpha", "5"], "--alpha: must lie in [0, 1]"),
        (["label", "--out", "x.jsonl", "--completions", "100000"], "--completions: must be between 0 and 64"),
        (["label", "--out", "x.jsonl", "--trajectories", "0"], "--trajectories: must be between 1 and 64"),
        (["label", "--out", "x.jsonl", "--gamma", "0"], "--gamma: must lie in (0, 1]"),
        (["eval", "--limit", "0"], "--limit: must be at least 1"),
        (["train-prm", "--labels", "a", "--dev-labels", "b", "--out", "c", "--epochs", "0"], "--epochs"),
        (["train-prm", "--labels", "a", "--dev-labels", "b", "--out", "c", "--dropout", "1"], "--dropout"),
        (
            ["train-policy", "--out", "c", "--online", "--rounds", "1000"],
            "--rounds: must be between 1 and 100",
        ),
        (["train-policy", "--out", "c", "-k", "500"], "-k/--k: must be between 1 and 100"),
        (["chat", "-k", "abc"], "-k/--k: 'abc' is not a whole number"),
    ],
)
def test_options_out_of_bounds_are_refused_when_parsed(argv, message, capsys, no_models):
    assert message in usage_error(argv, capsys)


def test_the_python_api_keeps_the_same_bounds():
    from reasonrag import InputError, build_agent
    from reasonrag.training.labeling import LabelConfig

    with pytest.raises(InputError, match="k must be between 1 and 100"):
        build_agent(retriever=object(), policy=object(), k=100_000)
    with pytest.raises(InputError, match="best_of must be between 1 and 64"):
        build_agent(retriever=object(), policy=object(), best_of=1000)
    with pytest.raises(InputError, match="completions must be between 0 and 64"):
        LabelConfig(completions=100_000)


# -- item 10: argparse errors in our format -------------------------------------------------------------
def test_an_abbreviated_option_is_refused_with_the_full_name_suggested(capsys, no_models):
    line = usage_error(["ask", Q, "--max-hop", "2"], capsys)
    assert "unknown option --max-hop; did you mean --max-hops?" in line
    assert "reasonrag ask --help" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["askk", Q], "did you mean ask?"),
        (["eval", "--selct", "min"], "did you mean --select?"),
        (["ask", Q, "--select", "minn"], "did you mean min?"),
        (["train-prm", "--labels", "a.jsonl"], "the following arguments are required: --dev-labels, --out"),
        (["ask", Q, "extra"], "unexpected argument(s): extra"),
    ],
)
def test_argument_errors_are_one_line_with_a_suggestion(argv, message, capsys, no_models):
    assert message in usage_error(argv, capsys)


# -- items 5, 6, 7: input errors, all before a model loads ----------------------------------------------
def _write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _labels_line(**step_changes) -> str:
    step = {
        "stage": "retrieve",
        "hop": 0,
        "action": "q",
        "observation": [],
        "prob": 0.5,
        "candidates": [{"text": "q", "prob": 0.5}],
        "chosen": 0,
    }
    step.update(step_changes)
    step = {k: v for k, v in step.items() if v is not ...}
    record = {
        "format": "reasonrag-labels/1",
        "question": "q?",
        "steps": [step],
        "labels": [1],
        "values": [1.0],
    }
    return json.dumps(record) + "\n"


def _cases(tmp: Path) -> list[tuple[list[str], str, str]]:
    """(argv, code, part of the message) for every bad input of the issue, and a few more."""
    empty = _write(tmp / "empty.jsonl", "")
    no_gold = _write(tmp / "no_gold.jsonl", json.dumps({"id": "a", "question": "Who?"}) + "\n")
    good = _labels_line()
    no_candidates = _write(tmp / "no_cands.jsonl", _labels_line(candidates=...))
    prob_high = _write(tmp / "high.jsonl", _labels_line(prob="high"))
    bad_utf8 = _write(tmp / "utf8.jsonl", good.encode() + b'{"format": "\xff\xfe"}\n')
    all_positive = _write(tmp / "dev.jsonl", good)
    a_file = _write(tmp / "a_file", "x")
    labels = _write(tmp / "labels.jsonl", good)
    eval_ = ["eval", "--corpus", CORPUS, "--questions", QUESTIONS, "--no-progress"]
    train = ["train-prm", "--labels", labels, "--dev-labels", labels, "--out", str(tmp / "m")]
    return [
        (["ask", "   ", "--corpus", CORPUS], "INVALID_INPUT", "the question is empty"),
        (["ask", "Who? " * 4000, "--corpus", CORPUS], "INVALID_INPUT", "the most is 2000"),
        (["ask", Q, "--corpus", CORPUS, "--prm", str(tmp / "nope")], "INVALID_MODEL", "--prm"),
        (["ask", Q, "--corpus", CORPUS, "--policy", str(tmp)], "INVALID_MODEL", "no manifest.json"),
        (["ask", Q, "--corpus", CORPUS, "--reader", str(tmp / "nope")], "INVALID_MODEL", "--reader"),
        (["ask", Q, "--corpus", CORPUS, "--backtrack", "--no-prm"], "INVALID_INPUT", "--backtrack needs"),
        (["ask", Q, "--corpus", "no-such-corpus"], "UNKNOWN_CORPUS", "hotpotqa"),
        ([*eval_, "--split", "nosuch"], "INVALID_INPUT", "its splits are dev, test"),
        ([*eval_, "--no-prm", "--best-of", "2", "--select", "min"], "INVALID_INPUT", "--select vote"),
        (
            ["eval", "--corpus", CORPUS, "--questions", str(tmp / "missing.jsonl")],
            "INVALID_QUESTIONS",
            "not found",
        ),
        (["eval", "--corpus", CORPUS, "--questions", empty], "INVALID_QUESTIONS", "no questions"),
        (["eval", "--corpus", CORPUS, "--questions", no_gold], "INVALID_QUESTIONS", "no gold answers"),
        ([*eval_, "--predictions", str(tmp)], "INVALID_INPUT", "is a directory"),
        ([*eval_, "--predictions", str(Path(a_file) / "p.jsonl")], "INVALID_INPUT", "is a file"),
        (
            ["label", "--corpus", CORPUS, "--questions", no_gold, "--out", "o.jsonl"],
            "INVALID_QUESTIONS",
            "gold",
        ),
        (
            ["label", "--corpus", CORPUS, "--questions", QUESTIONS, "--split", "dev", "--out", str(tmp)],
            "INVALID_INPUT",
            "directory",
        ),
        (
            ["train-prm", "--labels", str(tmp / "missing.jsonl"), "--dev-labels", labels, "--out", "m"],
            "INVALID_LABELS",
            "no such labels file",
        ),
        ([*train[:2], bad_utf8, *train[3:]], "INVALID_LABELS", "utf8.jsonl:2: not valid UTF-8"),
        ([*train[:2], no_candidates, *train[3:]], "INVALID_LABELS", "no_cands.jsonl:1: step 0: 'candidates'"),
        (
            [*train[:2], prob_high, *train[3:]],
            "INVALID_LABELS",
            "high.jsonl:1: step 0: 'prob' must be a number",
        ),
        (
            [*train[:4], all_positive, *train[5:]],
            "INVALID_LABELS",
            "no stage with both a positive and a negative",
        ),
        ([*train[:6], a_file], "INVALID_INPUT", "is a file, not a directory"),
        (["train-policy", "--labels", str(tmp / "missing.jsonl"), "--out", "m"], "INVALID_LABELS", "no such"),
        (["train-policy", "--labels", labels, "--out", "m", "--prm", str(tmp)], "INVALID_MODEL", "--prm"),
        (
            ["eval-prm", "--labels", labels, "--questions", str(tmp / "missing.jsonl")],
            "INVALID_QUESTIONS",
            "not found",
        ),
        (["chat", "--corpus", CORPUS, "--prm", str(tmp / "nope")], "INVALID_MODEL", "--prm"),
    ]


def test_every_bad_input_is_one_line_before_any_model_loads(tmp_path, capsys, no_models):
    for argv, code, message in _cases(tmp_path):
        assert main(argv) == 2, argv
        line = one_line_error(capsys, code)
        assert message in line, (argv, line)
    assert not (tmp_path / "m").exists()


# -- item 5: broken model files are one-line errors too (these load the other models first) --------------
@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_reader_is_a_one_line_error(tmp_path, capsys, monkeypatch, damage, tmp_path_factory):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    reader = tmp_path / "reader"
    shutil.copytree(SHIPPED / "reader", reader)
    weights = reader / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2] if damage == "truncate" else b"")
    assert main(["ask", Q, "--corpus", CORPUS, "--reader", str(reader), "--no-prm"]) == 2
    err = capsys.readouterr().err  # (the tiny corpus's index may be built first, with its progress)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("reasonrag: error [INVALID_MODEL]: ") and "model.safetensors" in last

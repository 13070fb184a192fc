"""What a person sees: no control characters from passages on the terminal, output that reads right."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import warnings
from pathlib import Path

import pytest

from reasonrag.agent.chat_session import backtrack_line, step_line
from reasonrag.cli.main import main, make_parser
from reasonrag.cli.output import print_trajectory
from reasonrag.data.terminal import terminal_text

# What must never reach a terminal raw: C0/C1 controls (a newline aside), DEL, bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE_TITLE = "Evil\x1b[31mRED\x07"
HOSTILE_TEXT = (
    "The Glass Lantern is a novel written by Odile\x1b]0;pwned\x07 Marchetti\x00 in 1931. "
    "Its cover reads \u202eelbaifitrec\u202c in mirror script."
)


@pytest.fixture
def hostile_corpus(tmp_path, tmp_path_factory, monkeypatch) -> str:
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    rows = [
        {"id": "evil", "title": HOSTILE_TITLE, "text": HOSTILE_TEXT},
        {"id": "calm", "title": "Quiet Harbor", "text": "Quiet Harbor is a fishing village on the coast."},
        {"id": "more", "title": "Red Kestrel", "text": "Red Kestrel is a band formed in 1988."},
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_terminal_text_escapes_controls_and_bidi_but_keeps_text():
    assert terminal_text("a\x1b[31mb\x07c\x00d\u202ee\x9bf") == "a\\x1b[31mb\\x07c\\x00d\\u202ee\\x9bf"
    assert terminal_text("line one\nline two\ttab\r") == "line one line two tab "
    assert terminal_text("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"
    plain = "Zoë's café, 東京, Ünïcödé and an emoji \U0001f600"
    assert terminal_text(plain) == plain


def test_ask_prints_a_hostile_passage_harmlessly_and_json_keeps_it(hostile_corpus, capsys):
    question = "Who wrote the novel The Glass Lantern?"
    assert main(["ask", question, "--corpus", hostile_corpus, "-k", "2", "--no-prm"]) == 0
    captured = capsys.readouterr()
    assert "Glass Lantern" in captured.out and "Evil\\x1b[31mRED\\x07" in captured.out
    assert not RAW.search(captured.out), repr(RAW.search(captured.out))
    assert "(answered in " in captured.err and "models loaded in " in captured.err  # a labelled timing
    assert main(["ask", question, "--corpus", hostile_corpus, "-k", "2", "--no-prm", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    titles = [p["title"] for s in result["steps"] if s["stage"] == "retrieve" for p in s["observation"]]
    assert HOSTILE_TITLE in titles  # --json carries the data as it is (JSON escapes it on the wire)


def test_chat_prints_a_hostile_passage_harmlessly(hostile_corpus, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("Who wrote the novel The Glass Lantern?\n/evidence\n/quit\n")
    )
    argv = ["chat", "--corpus", hostile_corpus, "-k", "2", "--no-prm", "--db", str(tmp_path / "c.sqlite")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Glass Lantern" in out and "\\x1b" in out
    assert not RAW.search(out), repr(RAW.search(out))


def test_an_error_naming_hostile_input_is_one_printable_line(capsys, tmp_path):
    questions = tmp_path / "clear\x1b[2Jscreen\nreasonrag: all good.jsonl"
    data = str(Path(__file__).parent / "data" / "tiny_corpus.jsonl")
    assert main(["eval", "--corpus", data, "--questions", str(questions)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not RAW.search(err) and "[INVALID_QUESTIONS]" in err


# -- item 11: output a person notices ----------------------------------------------------------------------
def _retrieve_step(scores: list[float]) -> dict:
    observation = [{"id": f"p{i}", "title": f"T{i}", "score": s, "text": ""} for i, s in enumerate(scores)]
    return {
        "stage": "retrieve",
        "hop": 1,
        "action": "q",
        "prob": 1.0,
        "score": None,
        "observation": observation,
    }


def test_a_merged_retrieval_list_is_printed_best_first():
    out = io.StringIO()
    print_trajectory({"steps": [_retrieve_step([0.471, 0.400, 0.463, 0.379])], "answer": "x"}, out)
    printed = [float(m) for m in re.findall(r"\((\d\.\d{3})\)", out.getvalue())]
    assert printed == [0.471, 0.463, 0.400, 0.379]


def test_alternatives_that_differ_only_at_the_end_look_different():
    base = "What government position was held by the woman who portrayed Corliss Archer? Kiss and Tell || "
    one, other = base + "Richard Wallace", base + "Shirley Temple"
    step = {"stage": "retrieve", "hop": 1, "action": one, "prob": 0.4, "score": 0.3, "observation": []}
    assert step_line(1, step) != step_line(1, {**step, "action": other})
    assert "Richard Wallace" in step_line(1, step)
    event = {"to_step": 4, "stage": "retrieve", "reason": "rejected by the user", "now_trying": other}
    assert "Shirley Temple" in backtrack_line(event)


def test_a_sentence_is_kept_once_however_often_the_policy_picks_it(tmp_path_factory, monkeypatch):
    """A policy that keeps the same sentence at every hop: the evidence holds it once."""
    from reasonrag import build_agent, run_agent
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.base import Candidate
    from reasonrag.retrieval.retriever import DenseRetriever

    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    sentence = {
        "passage_id": "The Quiet Orchard",
        "sentence_index": 0,
        "title": "The Quiet Orchard",
        "text": "x",
    }

    class Repeating:
        def propose(self, stage, state):
            if stage == "retrieve":
                return [Candidate(stage, "The Quiet Orchard", {"query": "The Quiet Orchard"}, 1.0)]
            if stage == "extract":
                return [Candidate(stage, "x", {"sentences": [sentence, dict(sentence)]}, 1.0)]
            return [Candidate(stage, "another hop", {"type": "continue"}, 0.9)] + [
                Candidate(stage, "Tomas Varga", {"type": "answer", "answer": "Tomas Varga"}, 0.1)
            ]

    corpus = Corpus.load(str(Path(__file__).parent / "data" / "tiny_corpus.jsonl"))
    agent = build_agent(retriever=DenseRetriever(corpus), policy=Repeating(), max_hops=3, k=2)
    state = run_agent(agent, "Who wrote the novel The Quiet Orchard?", max_hops=3)
    assert sum(1 for s in state["steps"] if s["stage"] == "extract") == 3
    assert [(e["passage_id"], e["sentence_index"]) for e in state["evidence"]] == [("The Quiet Orchard", 0)]


def test_loading_the_models_from_python_shows_no_loading_bars(capfd):
    from transformers.utils import logging as hf_logging

    from reasonrag.policies.reader import load_reader

    with warnings.catch_warnings():  # (the hub's own bars may be off in this process: not what is tested)
        warnings.simplefilter("ignore")
        hf_logging.enable_progress_bar()  # the Python API user's own setting: bars on
    capfd.readouterr()
    load_reader()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the caller's setting is back afterwards"


def test_every_option_of_every_command_has_a_true_help_text():
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in sub.choices.items()
        for action in command._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing
    policy_help = next(a.help for a in sub.choices["ask"]._actions if "--policy" in a.option_strings)
    from reasonrag.policies.head import SHIPPED_POLICY

    assert ("no head is shipped" in policy_help) != (SHIPPED_POLICY / "manifest.json").is_file()

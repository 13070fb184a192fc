"""`reasonrag chat` as a user meets it, through a real pseudo-terminal; and `ChatSession` directly.

The terminal tests spawn the real command (reader, encoder and a PRM with fixed random heads, so scores
are deterministic); the unit tests drive `ChatSession` with a scripted policy and scorer whose judgement is
known, so they are fast and say exactly what reject, time travel and resume must do.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest

from reasonrag import InputError
from reasonrag.agent.chat_session import PROMPT, USER_REASON, ChatSession
from reasonrag.agent.nodes import AgentSteps, BacktrackConfig
from reasonrag.data.types import Hit, Passage
from reasonrag.policies.base import Candidate

ROOT = Path(__file__).resolve().parents[1]
CORPUS = str(ROOT / "tests" / "data" / "tiny_corpus.jsonl")
Q = "Who wrote the novel The Quiet Orchard?"
STEP = re.compile(
    r"^\s*(\d+)\. hop \d+\s+(retrieve|extract|synthesize) .*score \d\.\d\d\s*(\[.*\])?\s*$", re.M
)


# -- scripted parts for the unit tests ---------------------------------------------------------------------
PASSAGES = [
    Passage("qo", "The Quiet Orchard", "x", ("The Quiet Orchard is a 1994 novel by Tomas Varga.",)),
    Passage("mo", "Miriam Okafor", "x", ("Miriam Okafor is a film director.",)),
]


class ScriptedSearch:
    def search(self, query, k=None, exclude=()):
        return [Hit(p, 0.9) for p in PASSAGES if p.id not in set(exclude)][: k or 5]


class ScriptedPolicy:
    """One query, one evidence set, and two answers: Tomas Varga (0.7) before Miriam Okafor (0.3)."""

    def propose(self, stage, state):
        if stage == "retrieve":
            return [Candidate("retrieve", state["question"], {"query": state["question"]}, 1.0)]
        if stage == "extract":
            p = state["retrieved"][0]
            kept = {
                "passage_id": p["id"],
                "title": p["title"],
                "sentence_index": 0,
                "text": p["sentences"][0],
            }
            return [Candidate("extract", kept["text"], {"sentences": [kept]}, 1.0)]
        return [
            Candidate("synthesize", name, {"type": "answer", "answer": name}, prob)
            for name, prob in (("Tomas Varga", 0.7), ("Miriam Okafor", 0.3))
        ]


def distrust_miriam(state, step):
    return 0.1 if step["observation"] == "Miriam Okafor" else 0.9


def session(db: Path, sid: str | None = None, scorer=distrust_miriam) -> ChatSession:
    nodes = AgentSteps(
        ScriptedSearch(),
        ScriptedPolicy(),
        max_hops=1,
        k=2,
        scorer=scorer,
        backtrack=BacktrackConfig(threshold=0.5, max_backtracks=3) if scorer else None,
    )
    return ChatSession(nodes, db, sid, out=io.StringIO())


def test_each_step_is_shown_while_the_agent_is_still_running(tmp_path):
    printed_before_scoring = []

    def scorer(state, step):
        printed_before_scoring.append(len(STEP.findall(chat.out.getvalue())))
        return 0.9

    with session(tmp_path / "chat.sqlite", scorer=scorer) as chat:
        chat.ask(Q)
    assert printed_before_scoring == [0, 1, 2]  # step k is scored after steps 1..k-1 were printed


def test_reject_takes_the_next_best_action_and_never_brings_the_rejected_answer_back(tmp_path):
    with session(tmp_path / "chat.sqlite") as chat:
        assert chat.ask(Q)["answer"] == "Tomas Varga"
        with pytest.raises(InputError, match="step 1 .* no untried alternative"):
            chat.reject(1)  # the only query there is
        state = chat.reject(3)
        # Miriam scores 0.1, below the threshold, and nothing is left to try; the plain fallback would keep
        # the best-scoring ending, which is the answer the user has just rejected.
        assert state["answer"] == "Miriam Okafor" and state["selected_from"] == "path"
        (gone,) = state["abandoned"]
        assert gone["reason"] == USER_REASON and gone["steps"][-1]["observation"] == "Tomas Varga"
        out = chat.out.getvalue()
        assert "backtrack to step 3 (synthesize): rejected by the user; now trying 'Miriam Okafor'" in out
        assert "Answer: Miriam Okafor" in out
        with pytest.raises(InputError, match="no untried alternative"):
            chat.reject(3)
        with pytest.raises(InputError, match="steps 1 to 3"):
            chat.reject(4)
        assert [r["answer"] for r in chat.history()] == ["Miriam Okafor"]


def test_back_restores_an_earlier_step_and_forks_without_losing_history(tmp_path):
    with session(tmp_path / "chat.sqlite") as chat:
        chat.ask(Q)
        chat.reject(3)
        rejected_head = chat.pointer
        thread = {"configurable": {"thread_id": chat.thread}}
        before = {s.config["configurable"]["checkpoint_id"] for s in chat.graph.get_state_history(thread)}
        restored = chat.back(2)
        assert [s["stage"] for s in restored["steps"]] == ["retrieve", "extract"]
        assert not restored.get("abandoned")  # as it was then, before the rejection
        assert "next: synthesize" in chat.out.getvalue()
        assert chat.resume()["answer"] == "Tomas Varga"  # the greedy choice, taken again from there
        # The fork added checkpoints; the rejected branch's are all still there.
        after = {s.config["configurable"]["checkpoint_id"] for s in chat.graph.get_state_history(thread)}
        assert before < after
        assert chat.graph.get_state(rejected_head).values["answer"] == "Miriam Okafor"
        with pytest.raises(InputError, match="nothing to continue"):
            chat.resume()


def test_a_session_resumes_by_id_with_its_questions_and_answers(tmp_path):
    db = tmp_path / "chat.sqlite"
    with session(db) as first:
        first.ask(Q)
        first.ask("Who directed Harbor Lights?")
        sid = first.session
    with session(db, sid) as again:
        assert again.resumed
        assert [(r["n"], r["question"]) for r in again.history()] == [
            (1, Q),
            (2, "Who directed Harbor Lights?"),
        ]
        assert again.state["question"] == "Who directed Harbor Lights?"  # stands on the last question
        again.ask("A third one?")
        assert again.history()[-1]["thread_id"] == f"{sid}/3"  # each question is its own thread
    with session(db) as other:
        assert other.session != sid and not other.resumed and other.history() == []
        assert [s["session"] for s in other.sessions()] == [sid]


def test_lines_that_are_not_questions(tmp_path):
    with session(tmp_path / "chat.sqlite", scorer=None) as chat:
        for line in ("", "   ", "/steps", "/frobnicate", "/reject two", "/back"):
            assert chat.handle(line) is True
        assert chat.handle(Q) is True
        assert chat.handle("/reject 3") is True
        assert chat.handle("/quit") is False
        out = chat.out.getvalue()
        assert "error: no question yet" in out
        assert "unknown command /frobnicate: /help lists the commands" in out
        assert "usage: /reject N" in out and "usage: /back N" in out
        assert "error: /reject needs step scores, and no PRM is loaded" in out
        assert "Traceback" not in out
        assert "no PRM loaded" in chat.banner()


# -- through a real pseudo-terminal ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory, encoder):
    """A cache dir and a PRM with fixed random heads: scores that are the same on every run."""
    import torch

    from reasonrag.prm.encoder_prm import EncoderPRM

    base = tmp_path_factory.mktemp("chat")
    torch.manual_seed(0)
    EncoderPRM(encoder=encoder).save(base / "prm")
    return base


def spawn(home: Path, *args: str) -> pexpect.spawn:
    env = dict(os.environ, REASONRAG_CACHE=str(home / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["TERM"] = "dumb"
    argv = ["-m", "reasonrag", "chat", "--corpus", CORPUS, "--prm", str(home / "prm"), "--max-hops", "2"]
    return pexpect.spawn(
        sys.executable, [*argv, "-k", "3", *args], cwd=str(ROOT), env=env, encoding="utf-8", timeout=120
    )


def say(child: pexpect.spawn, line: str) -> str:
    """Type a line, wait for the next prompt, return what was printed in between."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before.replace("\r\n", "\n")


@pytest.fixture(scope="module")
def first_session(home):
    """A user asks, looks at the path and evidence, rejects the answer step, travels back, and quits."""
    child = spawn(home, "--threshold", "0")
    child.expect(r"session (\w+) \(new")
    sid = child.match.group(1)
    child.expect_exact(PROMPT)
    seen = {"banner": child.before}
    for key, line in [
        ("ask", Q),
        ("steps", "/steps"),
        ("evidence", "/evidence"),
    ]:
        seen[key] = say(child, line)
    last = max(int(m.group(1)) for m in STEP.finditer(seen["ask"]))
    seen["last"] = last
    for key, line in [
        ("reject", f"/reject {last}"),
        ("history", "/history"),
        ("back", "/back 2"),
        ("continue", "/continue"),
        ("unknown", "/frobnicate"),
    ]:
        seen[key] = say(child, line)
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    seen.update(sid=sid, status=child.exitstatus)
    return seen


def test_chat_streams_steps_with_scores_and_answers(first_session):
    ask = first_session["ask"]
    stages = [m.group(2) for m in STEP.finditer(ask)]
    assert stages[:3] == ["retrieve", "extract", "synthesize"] and stages[-1] == "synthesize"
    assert re.search(r"Answer: Tomas Varga\s+\(path score \d\.\d\d, \d+ steps, 0 backtrack", ask)
    assert "backtracking on: below a path score of 0.00" in first_session["banner"]
    steps = first_session["steps"]
    assert "question: " + Q in steps and "alternative(s) left]" in steps and "no alternative left]" in steps
    assert (
        "[The Quiet Orchard] The Quiet Orchard is a 1994 novel by Tomas Varga." in first_session["evidence"]
    )


def test_rejecting_a_step_backtracks_from_it_to_a_new_answer(first_session):
    out, last = first_session["reject"], first_session["last"]
    assert f"<- backtrack to step {last} (synthesize): rejected by the user; now trying" in out
    answer = re.search(r"Answer: (.+?)\s+\(path score", out).group(1)
    assert answer != "Tomas Varga"
    assert f"Who wrote the novel The Quiet Orchard?\n     -> {answer}" in first_session["history"]
    assert (
        "back to just after step 2:" in first_session["back"] and "next: synthesize" in first_session["back"]
    )
    assert "Answer: Tomas Varga" in first_session["continue"]  # from before the rejection: greedy again
    assert "unknown command /frobnicate: /help lists the commands" in first_session["unknown"]
    assert first_session["status"] == 0


def test_resume_by_id_then_backtrack_on_a_strict_threshold_and_leave_with_ctrl_d(home, first_session):
    sid = first_session["sid"]
    child = spawn(home, "--session", sid, "--threshold", "1", "--max-backtracks", "1")
    child.expect_exact(PROMPT)
    banner = child.before
    assert f"session {sid} resumed" in banner and Q in banner  # the history comes back
    out = say(child, Q)
    assert re.search(
        r"<- backtrack to step \d+ \(\w+\): path score 0\.\d\d \(min of step scores\) fell below 1\.00", out
    )
    assert "Answer: " in out
    assert "2 question(s)" in say(child, "/history")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

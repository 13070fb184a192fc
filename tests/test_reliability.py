"""The reliability suite, fast part: concurrency, corrupted artifacts, fuzzed loaders (docs/reliability.md).

The kill -9 runs of every long command are in tests/test_reliability_kill.py (slow).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

import reasonrag.retrieval.index as index_module
from reasonrag.agent.graph import build_agent, run_agent
from reasonrag.agent.nodes import BacktrackConfig
from reasonrag.data.corpus import Corpus
from reasonrag.prm.loading import load_prm
from reasonrag.retrieval.encoder import encode, encoder_fingerprint
from reasonrag.retrieval.index import DenseIndex, cache_path, open_index
from reasonrag.retrieval.retriever import DenseRetriever

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")


def run_in_threads(n: int, target) -> tuple[list, list[BaseException]]:
    results, errors = [None] * n, []

    def work(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_two_builds_of_the_same_new_index_take_turns_and_share_one_result(tmp_path, monkeypatch, capsys):
    """Two builds of one new index overlap (a slow encoder): the second waits and reuses the first's."""
    corpus = Corpus.load(CORPUS)
    encoded: list[int] = []

    def slow_encode(texts, *args, **kwargs):
        encoded.append(len(texts))
        time.sleep(0.3)
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(index_module, "encode", slow_encode)
    indexes, errors = run_in_threads(
        2,
        lambda i: open_index(
            corpus, cache_dir=tmp_path, show_progress=False, batch_size=2, checkpoint_every=4
        ),
    )
    assert not errors, errors
    assert sum(encoded) == len(corpus.passages), "the corpus is encoded once, not twice"
    assert indexes[0].path == indexes[1].path == cache_path(corpus, encoder_fingerprint(None), tmp_path)
    np.testing.assert_array_equal(indexes[0].embeddings, indexes[1].embeddings)
    assert "waiting for it" in capsys.readouterr().err
    leftovers = [p.name for p in indexes[0].path.parent.iterdir() if p.name != indexes[0].path.name]
    assert [name for name in leftovers if not name.endswith(".lock")] == [], "no work directory left"
    assert DenseIndex.load(indexes[0].path).count == len(corpus.passages)


# -- a thread is a conversation: each question starts clean (item 4) ---------------------------------------
@pytest.fixture(scope="module")
def backtracking_agent(tmp_path_factory):
    """The real agent over the tiny corpus with the shipped PRM, a threshold every path falls below (so it
    backtracks, abandons and finishes several endings), and a checkpointer that keeps each thread."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    try:
        corpus = Corpus.load(CORPUS)
        yield build_agent(
            retriever=DenseRetriever(corpus),
            k=3,
            prm=load_prm(None),
            backtrack=BacktrackConfig(threshold=1.0, max_backtracks=2),
            checkpointer=InMemorySaver(),
        )
    finally:
        mp.undo()


def _seen_by_a_person(state: dict) -> dict:
    keys = ("answer", "status", "backtracks", "path_score", "selected_from", "hop")
    out = {k: state.get(k) for k in keys}
    for channel in ("steps", "branches", "abandoned", "finished", "trace", "evidence", "seen"):
        out[channel] = json.loads(json.dumps(state.get(channel), default=str))
    for step in [*out["steps"], *out["trace"], *(s for a in out["abandoned"] for s in a["steps"])]:
        step.pop("seconds", None)
    return out


def test_a_second_question_on_a_thread_carries_nothing_of_the_first(backtracking_agent):
    first, second = (
        "Who wrote the novel The Quiet Orchard?",
        "Where was the director of the film Harbor Lights born?",
    )
    thread = {"configurable": {"thread_id": "conversation"}}
    before = run_agent(backtracking_agent, first, config=thread)
    assert before["backtracks"] == 2 and before["abandoned"] and before["finished"]
    after = run_agent(backtracking_agent, second, config=thread)
    alone = run_agent(backtracking_agent, second, config={"configurable": {"thread_id": "fresh"}})
    assert _seen_by_a_person(after) == _seen_by_a_person(alone)
    assert "enugu" in after["answer"].lower()


# -- corrupted artifacts: a clear one-line error (or, for a cache, a rebuild), never a traceback -----------
SHIPPED = Path(__file__).resolve().parents[1] / "reasonrag" / "weights"
GARBAGE = b"\x00\xffnot what was written\xfe" * 40
DAMAGES = {
    "weights truncated": ("model.safetensors", lambda b: b[: len(b) // 2]),
    "weights empty": ("model.safetensors", lambda b: b""),
    "weights garbage": ("model.safetensors", lambda b: GARBAGE),
    "weights missing": ("model.safetensors", None),
    "manifest truncated": ("manifest.json", lambda b: b[: len(b) // 2]),
    "manifest empty": ("manifest.json", lambda b: b""),
    "manifest not UTF-8": ("manifest.json", lambda b: GARBAGE),
    "manifest a list": ("manifest.json", lambda b: b"[1, 2]"),
    "manifest missing": ("manifest.json", None),
}


def damage(directory: Path, how: str) -> None:
    name, change = DAMAGES[how]
    file = directory / name
    if change is None:
        file.unlink()
    else:
        file.write_bytes(change(file.read_bytes()))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """A saved (untrained) policy head: what `reasonrag train-policy` writes."""
    from reasonrag.policies.head import PolicyHead, PolicyHeadConfig, TunedPolicy
    from reasonrag.retrieval.encoder import load_encoder

    out = tmp_path_factory.mktemp("policy") / "head"
    TunedPolicy(None, PolicyHead(load_encoder(None), PolicyHeadConfig())).save(out, {"command": "test"})
    return out


def _load(kind: str, directory: Path) -> None:
    if kind == "prm":
        load_prm(directory)
    elif kind == "reader":
        from reasonrag.policies.reader import load_reader

        load_reader(directory)
    else:
        from reasonrag.policies.head import load_policy_head

        load_policy_head(directory, None)


@pytest.mark.parametrize("how", list(DAMAGES))
@pytest.mark.parametrize("kind", ["prm", "reader", "policy"])
def test_a_damaged_model_directory_is_a_clear_error(kind, how, policy_dir, tmp_path):
    from reasonrag.errors import ReasonRAGError

    directory = tmp_path / kind
    shutil.copytree(policy_dir if kind == "policy" else SHIPPED / kind, directory)
    damage(directory, how)
    with pytest.raises(ReasonRAGError) as caught:
        _load(kind, directory)
    assert caught.value.code == "INVALID_MODEL"
    assert str(directory) in str(caught.value)


@pytest.mark.parametrize("kind", ["prm", "policy"])
def test_a_damaged_model_given_to_the_cli_is_one_line_and_exit_2(
    kind, policy_dir, tmp_path, capsys, monkeypatch
):
    """End to end: `ask --prm/--policy DIR` with garbage weights (the reader's case is in test_cli_errors)."""
    from reasonrag.cli.main import main

    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path / "cache"))
    directory = tmp_path / kind
    shutil.copytree(policy_dir if kind == "policy" else SHIPPED / kind, directory)
    damage(directory, "weights garbage")
    assert main(["ask", "Who wrote it?", "--corpus", CORPUS, f"--{kind}", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("reasonrag: error [INVALID_MODEL]: ")


INDEX_DAMAGES = {
    "embeddings truncated": ("embeddings.npy", lambda b: b[: len(b) // 2]),
    "embeddings scribbled": ("embeddings.npy", lambda b: b[:-64] + b"\x7f" * 64),
    "embeddings missing": ("embeddings.npy", None),
    "manifest garbage": ("manifest.json", lambda b: GARBAGE),
    "manifest empty": ("manifest.json", lambda b: b""),
    "manifest missing": ("manifest.json", None),
}


@pytest.mark.parametrize("how", list(INDEX_DAMAGES))
def test_a_damaged_cached_index_is_rebuilt_not_trusted(how, tmp_path, monkeypatch, capsys):
    """The index is a cache: a damaged one is said so on stderr and rebuilt to the same vectors."""
    from reasonrag.cli.main import main

    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path))
    assert main(["index", "--corpus", CORPUS, "--json"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    before = (path / "embeddings.npy").read_bytes()
    name, change = INDEX_DAMAGES[how]
    if change is None:
        (path / name).unlink()
    else:
        (path / name).write_bytes(change((path / name).read_bytes()))
    assert main(["index", "--corpus", CORPUS, "--json"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "rebuilding" in err or "building it" in err, err
    assert (path / "embeddings.npy").read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [path.name]


def test_a_damaged_faiss_file_is_an_invalid_index(tmp_path):
    """The IVF kind's faiss.index (the tiny corpus is flat by default, so this one is built IVF)."""
    from reasonrag.errors import InvalidIndexError

    corpus = Corpus.load(CORPUS)
    index = DenseIndex.build(corpus.passages, corpus_checksum=corpus.checksum(), exact_threshold=1)
    index.save(tmp_path / "ivf")
    faiss_file = tmp_path / "ivf" / "faiss.index"
    for bad in (faiss_file.read_bytes()[:100], b""):
        faiss_file.write_bytes(bad)
        with pytest.raises(InvalidIndexError, match="faiss.index"):
            DenseIndex.load(tmp_path / "ivf")
        with pytest.raises(InvalidIndexError, match="faiss.index"):
            DenseIndex.load(tmp_path / "ivf", verify=False)


@pytest.mark.parametrize("content", [b'{"rounds": [', b"", GARBAGE, b"[1]", b'{"rounds": 3}'])
def test_a_damaged_online_rounds_file_is_a_clear_error(content, tmp_path):
    from reasonrag.errors import ReasonRAGError
    from reasonrag.training.online import OnlineConfig, train_online
    from reasonrag.training.policy_training import PolicyGradientConfig

    (tmp_path / "rounds.json").write_bytes(content)
    questions = [object()] * 2
    with pytest.raises(ReasonRAGError, match="rounds.json"):
        train_online(
            tmp_path,
            questions,
            None,
            None,
            PolicyGradientConfig(),
            OnlineConfig(rounds=1, questions_per_round=1),
        )


def test_the_next_save_removes_what_a_killed_save_left_staged(tmp_path, policy_dir):
    """A kill -9 mid-save leaves a staged directory (or file) behind; the next save of that model removes
    it, and leaves alone what a live writer is staging."""
    import os
    import subprocess

    from reasonrag.data.files import staged_directory
    from reasonrag.policies.head import load_policy_head

    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    target = tmp_path / "model"
    killed = tmp_path / f".model.tmp-{dead.pid}-x1"
    live = tmp_path / f".model.tmp-{os.getppid()}-x2"
    killed.mkdir()
    live.mkdir()
    (tmp_path / "model.old").mkdir()  # a kill between swap_in's two renames
    with staged_directory(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name])

    head = load_policy_head(policy_dir, None)
    (policy_dir / f".model.safetensors.tmp-{dead.pid}-x3").write_bytes(b"half")
    head.save(policy_dir)
    assert sorted(p.name for p in policy_dir.iterdir()) == ["manifest.json", "model.safetensors"]


# -- chat sessions: a damaged database, and two chat processes on one ---------------------------------------
TESTS = Path(__file__).resolve().parent


def _chat(db: Path, session: str | None = None):
    import sys

    sys.path.insert(0, str(TESTS))
    from test_chat import session as scripted_session  # a scripted policy and search: no model loads

    return scripted_session(db, session)


@pytest.mark.parametrize("where", ["header", "inside"])
def test_a_damaged_chat_database_is_a_clear_error(where, tmp_path):
    from reasonrag.errors import InputError

    db = tmp_path / "chat.sqlite"
    with _chat(db, "s") as chat:
        for i in range(3):
            chat.handle(f"Who wrote the novel The Quiet Orchard? ({i})")
    data = bytearray(db.read_bytes())
    start = 0 if where == "header" else len(data) // 3
    data[start : start + 8192] = b"\xab" * 8192
    db.write_bytes(bytes(data))
    with pytest.raises(InputError, match="chat.sqlite"):
        _chat(db, "s")


CHAT_PROCESS = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_chat import session
with session(Path({db!r}), sys.argv[1]) as chat:
    for i in range(int(sys.argv[3])):
        chat.handle(f"Who wrote the novel The Quiet Orchard? ({{sys.argv[2]}} {{i}})")
    print(chat.out.getvalue())
"""


def test_chat_processes_on_one_database_keep_every_question_apart(tmp_path):
    """Three chat processes at once on one SQLite file, two of them in the same session: nobody crashes,
    every question keeps its own number, thread and answer, and each session holds exactly its own."""
    import subprocess
    import sys

    db = tmp_path / "chat.sqlite"
    script = CHAT_PROCESS.format(tests=str(TESTS), db=str(db))
    n = 6
    runs = [("shared", "a"), ("shared", "b"), ("alone", "c")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, sid, tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sid, tag in runs
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert out.count("Answer: Tomas Varga") == n and "error" not in out
    with _chat(db, "shared") as shared, _chat(db, "alone") as alone:
        for chat, tags in ((shared, "ab"), (alone, "c")):
            history = chat.history()
            assert [row["n"] for row in history] == list(range(1, n * len(tags) + 1))
            assert len({row["thread_id"] for row in history}) == len(history)
            asked = sorted(row["question"] for row in history)
            assert asked == sorted(
                f"Who wrote the novel The Quiet Orchard? ({t} {i})" for t in tags for i in range(n)
            )
            for row in history:
                values = chat.graph.get_state({"configurable": {"thread_id": row["thread_id"]}}).values
                assert values["question"] == row["question"] and values["answer"] == "Tomas Varga"


# -- one compiled graph, eight threads at once, cold caches ----------------------------------------------
def _cold_agent(cache: Path):
    """A new agent on a new index cache: retriever, reader windows and PRM all start empty."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(cache))
    try:
        return build_agent(
            retriever=DenseRetriever(Corpus.load(CORPUS), show_progress=False), k=3, prm=load_prm(None)
        )
    finally:
        mp.undo()


def _outcome(state: dict) -> dict:
    steps = [(s["stage"], s["action"], s.get("score")) for s in state["steps"]]
    return {"answer": state["answer"], "status": state.get("status"), "steps": steps}


def test_eight_threads_on_one_compiled_graph_answer_as_one_thread_does(tmp_path):
    """Four questions, greedy and sampled (seeded), all at once on one graph built cold: each answer, and the
    path to it, is the one a fresh graph gives when asked one question at a time."""
    from reasonrag.data.corpus import load_questions

    questions = [q.question for q in load_questions(str(DATA / "tiny_questions.jsonl"))]
    jobs = [(q, mode) for q in questions for mode in ("greedy", "sample")]
    assert len(jobs) == 8

    def ask(graph, job):
        question, mode = job
        return _outcome(run_agent(graph, question, max_hops=2, mode=mode, seed=7))

    one_at_a_time = [ask(_cold_agent(tmp_path / "a"), job) for job in jobs]
    graph = _cold_agent(tmp_path / "b")
    at_once, errors = run_in_threads(8, lambda i: ask(graph, jobs[i]))
    assert not errors, errors
    assert at_once == one_at_a_time


# -- fuzzed loaders: any bytes either load or raise our one error, never another exception -----------------
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reasonrag.errors import ReasonRAGError  # noqa: E402
from reasonrag.training.labeling import LabelConfig  # noqa: E402

FIELDS = (
    "id contents title text sentences question golden_answers answers answer split metadata format steps "
    "labels values config question_id n_samples count stage hop action prob candidates chosen setting em f1 "
    "cover_em seconds"
).split()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
STEP = {"stage": "retrieve", "hop": 0, "action": "q", "candidates": [{"text": "q", "prob": 1.0}], "chosen": 0}
GOOD = [  # one good line of each kind of file, for the fuzzer to damage
    {"id": "p1", "contents": "Title\nSome text. More text.", "sentences": ["Some text."]},
    {"id": "q1", "question": "Who?", "golden_answers": ["Ann"], "split": "dev", "metadata": {}},
    {
        "format": "reasonrag-labels/1",
        "question": "Who?",
        "question_id": "q1",
        "steps": [STEP],
        "labels": [1],
        "values": [1.0],
        "count": 1,
        "n_samples": 1,
        "config": asdict(LabelConfig()),  # as `label` resumes only a file made with its own settings
    },
    {
        "format": "reasonrag-predictions/1",
        "id": "q1",
        "answer": "Ann",
        "em": 1.0,
        "f1": 1.0,
        "cover_em": 1.0,
        "seconds": 0.1,
        "steps": [],
        "setting": {},
    },
]


@st.composite
def damaged_record(draw) -> dict:
    record = json.loads(json.dumps(draw(st.sampled_from(GOOD))))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = draw(JSON)
    if draw(st.booleans()) and "steps" in record and isinstance(record["steps"], list) and record["steps"]:
        step = dict(STEP)
        step[draw(st.sampled_from(list(STEP) + ["prob"]))] = draw(JSON)
        record["steps"] = [step]
    return record


LINE = st.one_of(
    damaged_record().map(lambda r: json.dumps(r).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"\xef\xbb\xbf{}",
            b"[" * 50_000,
            b'{"id": ' + b"9" * 5000 + b"}",
            b'{"id": NaN}',
            b"\x00",
            b"{",
        ]
    ),
)
FILE = st.tuples(st.lists(LINE, max_size=4), st.booleans()).map(
    lambda t: b"\n".join(t[0]) + (b"\n" if t[1] else b"")
)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loads_or_our_error(load, data: bytes, path: Path) -> None:
    path.write_bytes(data)
    try:
        load(path)
    except ReasonRAGError as exc:
        assert "\n" not in str(exc).strip() or exc.code, exc  # printed as one line by the CLI


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input.jsonl"


@FUZZ
@given(data=FILE)
def test_fuzzed_corpora_load_or_raise_our_error(data, fuzz_file):
    _loads_or_our_error(lambda p: Corpus.load(str(p)), data, fuzz_file)


@FUZZ
@given(data=FILE)
def test_fuzzed_questions_load_or_raise_our_error(data, fuzz_file):
    from reasonrag.data.corpus import load_questions

    _loads_or_our_error(load_questions, data, fuzz_file)


@FUZZ
@given(data=FILE)
def test_fuzzed_labels_load_or_raise_our_error(data, fuzz_file):
    """Both ways a labels file is read: by the trainers, and by `label` resuming into it."""
    from reasonrag.training.labeling import LabelConfig, read_labels, resume_point

    _loads_or_our_error(read_labels, data, fuzz_file)
    _loads_or_our_error(lambda p: resume_point(p, LabelConfig()), data, fuzz_file)


@FUZZ
@given(data=FILE)
def test_fuzzed_predictions_load_or_raise_our_error(data, fuzz_file):
    from reasonrag.evaluation.predictions import read_predictions

    _loads_or_our_error(lambda p: read_predictions(p, {}), data, fuzz_file)


NUMBER = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.text(alphabet="0123456789", min_size=300, max_size=400),  # beyond what a float holds
)
SCORE = st.tuples(
    NUMBER,
    st.sampled_from(["", ".", "%", "/", " out of "]),
    NUMBER,
    st.sampled_from(["<score>{}</score>", "Score: {}", "<score>{}", "{}"]),
).map(lambda t: t[3].format(t[0] + (t[1] + t[2] if t[1] else "")))


@FUZZ
@example(reply="<score>" + "9" * 400 + "/" + "9" * 400 + "</score>")  # inf / inf: refused, never NaN
@given(reply=SCORE)
def test_fuzzed_judge_scores_are_a_grade_in_0_1_or_our_error(reply):
    """Numbers of any length and scale in an LLM judge's reply (tests/test_tags.py fuzzes the reply's
    shape); and the same numbers as cited sentence numbers."""
    from reasonrag.errors import LLMOutputError
    from reasonrag.llm.tags import parse_evidence, parse_score

    try:
        assert 0.0 <= parse_score(reply) <= 1.0, reply
    except LLMOutputError:
        pass
    cited = reply.replace("<score>", "<evidence>[").replace("</score>", "]</evidence>")
    try:
        assert all(0 <= i < 3 for i in parse_evidence(cited, ["a.", "b.", "c."], max_keep=2))
    except LLMOutputError:
        pass

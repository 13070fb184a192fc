"""The reliability suite, slow part: kill -9 at a random point of every long command, then the same command.

For `index`, `label`, `train-prm`, `train-policy` and `eval` on tiny data: an uninterrupted run gives the
reference output; then the same command is started again from scratch, killed with SIGKILL at a random
point (seeded, so the points are the same each run: after some output exists, or some way into the
reference's running time), and run once more to the end. The final output must equal the reference (given
the seed): the same JSONL records, none duplicated or lost; byte-identical weights; the same vectors. And
nothing half-written is left beside it. See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
RNG = random.Random(18)  # issue 18: random kill points, the same ones every run
LABEL = ["-k", "3", "--max-hops", "2", "--trajectories", "2", "--completions", "1", "--no-progress"]
TIMING = {"seconds", "build_seconds", "built_at", "explore_seconds", "train_seconds"}


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REASONRAG_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
    }


# `reasonrag index` checkpoints every 4096 passages; this driver runs the same command with 32-passage
# chunks, so a kill on a small corpus lands between checkpoints and the rerun has chunks to resume from.
INDEX_DRIVER = (
    "import sys; from reasonrag.retrieval.index import DenseIndex; "
    "DenseIndex.__dict__['build'].__func__.__kwdefaults__['checkpoint_every'] = 32; "
    "from reasonrag.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def _argv(args: list[str]) -> list[str]:
    if args[0] == "index":
        return [sys.executable, "-c", INDEX_DRIVER, *args]
    return [sys.executable, "-m", "reasonrag", *args]


def run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command to the end; returns it and its wall time (used only to place kill points)."""
    t0 = time.monotonic()
    done = subprocess.run(_argv(args), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done, time.monotonic() - t0


def run_and_kill(args: list[str], env: dict[str, str], ready: Callable[[], bool], delay: float) -> int:
    """Start a command, wait until `ready()` (or it ends), wait `delay` seconds more, SIGKILL it.

    Returns its exit status: -SIGKILL when the kill came first."""
    proc = subprocess.Popen(_argv(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def untimed(x):
    """`x` without the wall-clock fields (seconds, build times), which no two runs share."""
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [untimed(v) for v in x]
    return x


def records(path: Path) -> list[str]:
    """A JSONL file's records without their timings, sorted: equal lists mean nothing lost or duplicated."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "a torn last line"
    return sorted(json.dumps(untimed(json.loads(line)), sort_keys=True) for line in text.splitlines())


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    """Anything in `directory` but what the command is meant to leave there (and index locks)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in keep and not p.name.endswith(".lock"))


# -- the inputs: a corpus big enough to index in chunks, and labels to train on ---------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def questions(work) -> str:
    """The four tiny questions as one split (so `label` takes them all)."""
    path = work / "questions.jsonl"
    rows = [json.loads(line) for line in (DATA / "tiny_questions.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def labels(work, questions) -> tuple[list[str], Path]:
    """The label command and its uninterrupted output: the label test's reference, the trainers' input."""
    out = work / "labels" / "labels.jsonl"
    args = ["label", "--corpus", CORPUS, "--questions", questions, *LABEL, "--out", str(out), "--json"]
    run(args, _env(work / "cache"))
    return args, out


# -- index --------------------------------------------------------------------------------------------------
def test_index_killed_mid_build_resumes_to_the_same_vectors(work, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "contents": f"Topic {i}\nPassage {i} tells of place {i * 7 % 97}."})
            + "\n"
            for i in range(400)
        )
    )
    args = ["index", "--corpus", str(corpus), "--json"]
    reference, _ = run(args, _env(tmp_path / "reference"))
    expected = np.load(Path(json.loads(reference.stdout)["path"]) / "embeddings.npy")

    env = _env(tmp_path / "cache")
    indexes = tmp_path / "cache" / "indexes"
    chunks = RNG.randint(1, 6)  # of 13: a kill lands within a chunk or two of this, even on a fast machine

    def ready() -> bool:
        return indexes.is_dir() and sum(1 for _ in indexes.glob("*.partial/chunk-*.npy")) >= chunks

    assert run_and_kill(args, env, ready, RNG.uniform(0.0, 0.05)) == -signal.SIGKILL
    done, _ = run(args, env)
    assert "resuming the unfinished index build" in done.stderr
    path = Path(json.loads(done.stdout)["path"])
    np.testing.assert_array_equal(np.load(path / "embeddings.npy"), expected)
    assert leftovers(indexes, {path.name}) == []


# -- label ------------------------------------------------------------------------------------------------
def test_label_killed_after_some_questions_resumes_to_the_same_records(work, labels):
    args, reference = labels
    out = work / "killed" / "labels.jsonl"
    argv = [out.as_posix() if a == str(reference) else a for a in args]
    env = _env(work / "cache")
    questions_done = RNG.randint(1, 3)  # of 4; each writes its lines at once

    def ready() -> bool:
        if not out.exists():
            return False
        complete = out.read_text().split("\n")[:-1]  # a line being written has no newline yet
        return len({json.loads(line)["question_id"] for line in complete}) >= questions_done

    assert run_and_kill(argv, env, ready, RNG.uniform(0.0, 0.2)) == -signal.SIGKILL  # mid-question
    done, _ = run(argv, env)
    assert json.loads(done.stdout.strip().splitlines()[-1])["questions_resumed"] >= questions_done
    assert records(out) == records(reference)
    assert leftovers(out.parent, {out.name}) == []


# -- eval -------------------------------------------------------------------------------------------------
def test_eval_killed_after_some_answers_resumes_to_the_same_predictions(work, questions):
    env = _env(work / "cache")
    base = ["eval", "--corpus", CORPUS, "--questions", questions, "-k", "3", "--no-progress", "--json"]
    reference = work / "eval" / "reference.jsonl"
    run([*base, "--predictions", str(reference)], env)
    out = work / "eval-killed" / "predictions.jsonl"
    answered = RNG.randint(1, 3)  # of 4
    code = run_and_kill(
        [*base, "--predictions", str(out)], env, lambda: lines(out) >= answered, RNG.uniform(0.0, 0.1)
    )
    assert code == -signal.SIGKILL
    done, _ = run([*base, "--predictions", str(out)], env)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["resumed"] >= answered
    assert records(out) == records(reference)
    assert leftovers(out.parent, {out.name}) == []


# -- train-prm and train-policy ----------------------------------------------------------------------------
TRAIN = {
    "train-prm": ["train-prm", "--epochs", "3", "--hidden", "64"],
    "train-policy": ["train-policy", "--epochs", "2", "--process-reward", "mc"],
}


@pytest.mark.parametrize("name", list(TRAIN))
def test_training_killed_anywhere_then_rerun_writes_the_same_bytes(name, work, labels, tmp_path):
    """Killed twice at random points of its running time (early, then late, when it may be saving), the
    same command with the same seed still writes the reference's weights, and no staged directory or
    temporary file is left beside or inside the model."""
    _, train = labels
    out = tmp_path / "models" / "model"
    args = [*TRAIN[name], "--labels", str(train), "--dev-labels", str(train), "--out", str(out)]
    args += ["--seed", "3", "--no-progress", "--json"]
    env = _env(work / "cache")
    _, seconds = run(args, env)
    reference = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.rmtree(out)

    started = time.monotonic()
    early = RNG.uniform(0.3, 0.6) * seconds
    assert run_and_kill(args, env, lambda: time.monotonic() - started >= early, 0.0) == -signal.SIGKILL
    started = time.monotonic()
    late = RNG.uniform(0.6, 1.0) * seconds
    run_and_kill(args, env, lambda: time.monotonic() - started >= late, 0.0)  # may have finished first
    run(args, env)
    assert (out / "model.safetensors").read_bytes() == reference["model.safetensors"]
    assert untimed(json.loads((out / "manifest.json").read_bytes())) == untimed(
        json.loads(reference["manifest.json"])
    )
    assert leftovers(out.parent, {out.name}) == [] and leftovers(out, set(reference)) == []


# -- train-policy --online: resumable by rounds ----------------------------------------------------------
def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_online_training_killed_anywhere_resumes_to_the_same_policy(work, tmp_path):
    """Two rounds of explore, label, update; killed twice at random points (during a round's exploring, its
    training or its saves), the same command ends with the reference's rounds, labels and weights."""
    corpus = tmp_path / "tiny"
    corpus.mkdir()
    shutil.copy(CORPUS, corpus / "passages.jsonl")
    rows = [json.loads(line) for line in (DATA / "tiny_questions.jsonl").read_text().splitlines()]
    (corpus / "questions.jsonl").write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    out = tmp_path / "models" / "online"
    args = ["train-policy", "--online", "--corpus", str(corpus), "--out", str(out), "--rounds", "2"]
    args += [
        "--questions-per-round",
        "2",
        "--trajectories",
        "2",
        "-k",
        "2",
        "--max-hops",
        "2",
        "--epochs",
        "1",
    ]
    args += ["--seed", "5", "--no-progress", "--json"]
    env = _env(work / "cache")
    _, seconds = run(args, env)
    reference = tree(out)
    shutil.rmtree(out)

    for low, high in ((0.3, 0.6), (0.5, 1.0)):
        deadline = time.monotonic() + RNG.uniform(low, high) * seconds
        run_and_kill(args, env, lambda deadline=deadline: time.monotonic() >= deadline, 0.0)
    run(args, env)
    result = tree(out)
    assert sorted(result) == sorted(reference), "nothing missing, nothing left over"
    for name, data in reference.items():
        if name.endswith(".json"):
            assert untimed(json.loads(result[name])) == untimed(json.loads(data)), name
        elif name.endswith(".jsonl"):
            assert records(out / name) == sorted(
                json.dumps(untimed(json.loads(line)), sort_keys=True) for line in data.decode().splitlines()
            ), name
        else:
            assert result[name] == data, name
    assert leftovers(out.parent, {out.name}) == []
    assert "role" not in json.loads(result["manifest.json"])  # the trained policy is not the anchor

"""Many questions at once: threads (`--concurrency`) and Ray (`--ray`) write what a one-at-a-time run
writes, for the same seed (in another order, timings aside)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from reasonrag.cli.main import main
from reasonrag.errors import InputError
from reasonrag.parallel.threads import Locked, locked, map_unordered

DATA = Path(__file__).parent / "data"
TINY = ["--corpus", str(DATA / "tiny_corpus.jsonl"), "--questions", str(DATA / "tiny_questions.jsonl")]
LABEL = [*TINY, "-k", "3", "--max-hops", "1", "--trajectories", "2", "--completions", "1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


# --- the thread pool and the lock ------------------------------------------------------------------------


class Unsafe:
    """Fails when two threads are inside `work` at once, as an OrderedDict cache can."""

    def __init__(self) -> None:
        self.inside = 0
        self.calls = 0

    def work(self, x: int) -> int:
        self.inside += 1
        try:
            assert self.inside == 1, "two threads at once"
            time.sleep(0.002)
            self.calls += 1
            return x * 2
        finally:
            self.inside -= 1


def test_locked_serialises_what_is_not_thread_safe_and_the_pool_returns_everything():
    unsafe = Unsafe()
    shared = locked(unsafe)
    assert isinstance(shared, Locked) and shared.calls == 0  # attributes read through
    seen_threads = set()

    def work(worker, x):
        seen_threads.add(threading.get_ident())
        return shared.work(x)

    got = dict(map_unordered(work, range(40), make_worker=lambda: None, concurrency=8))
    assert got == {x: 2 * x for x in range(40)} and unsafe.calls == 40 and len(seen_threads) > 1

    class Safe:
        thread_safe = True

    safe = Safe()
    assert locked(safe) is safe and locked(None) is None
    with pytest.raises(InputError, match="concurrency"):
        list(map_unordered(work, [1], make_worker=lambda: None, concurrency=0))


def test_an_error_in_one_item_is_raised_not_lost():
    def work(worker, x):
        if x == 3:
            raise InputError("item 3 is bad")
        return x

    with pytest.raises(InputError, match="item 3"):
        list(map_unordered(work, range(10), make_worker=lambda: None, concurrency=4))


# --- label ---------------------------------------------------------------------------------------------


def test_label_on_threads_writes_the_lines_of_a_one_at_a_time_run(tmp_path, capsys):
    every = [*LABEL, "--split", ""]  # all four questions
    assert main(["label", *every, "--out", str(tmp_path / "one.jsonl"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["label", *every, "--out", str(tmp_path / "four.jsonl"), "--json", "--concurrency", "4"]) == 0
    four = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert lines(tmp_path / "four.jsonl") == lines(tmp_path / "one.jsonl")
    assert four["questions_new"] == one["questions_new"] == 4 and four["rollouts"] == one["rollouts"]
    assert four["labeled_steps_new"] == one["labeled_steps_new"]


def test_scale_out_options_are_checked_before_any_model_loads(tmp_path, capsys):
    for extra, problem in (
        (["--concurrency", "0"], "--concurrency"),
        (["--workers", "2"], "--workers"),
        (["--ray", "--concurrency", "2"], "not both"),
    ):
        assert main(["label", *LABEL, "--out", str(tmp_path / "x.jsonl"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("reasonrag: error [INVALID_INPUT]") and problem in err
    assert not (tmp_path / "x.jsonl").exists()


def test_without_ray_installed_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["label", *LABEL, "--out", str(tmp_path / "x.jsonl"), "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasonrag: error [MISSING_DEPENDENCY]") and 'pip install "reasonrag[ray]"' in err


# --- eval --------------------------------------------------------------------------------------------


def predictions(path: Path) -> list[dict]:
    """The records of a predictions file by question id, timings dropped."""
    rows = []
    for line in path.read_text().splitlines():
        record = {k: v for k, v in json.loads(line).items() if k != "seconds"}
        record["steps"] = [{k: v for k, v in s.items() if k != "seconds"} for s in record["steps"]]
        rows.append(record)
    return sorted(rows, key=lambda r: r["id"])


EVAL = [*TINY, "--split", "", "-k", "3", "--max-hops", "1", "--no-progress", "--json"]


def test_eval_on_threads_answers_as_one_at_a_time_with_the_embedded_policy_and_prm(tmp_path, capsys):
    """The embedded policy, reader and PRM are not thread-safe: behind the lock, 4 threads with cold
    caches give exactly the one-at-a-time predictions (step scores included)."""
    assert main(["eval", *EVAL, "--sample", "--seed", "3", "--predictions", str(tmp_path / "one.jsonl")]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    argv = ["eval", *EVAL, "--sample", "--seed", "3", "--predictions", str(tmp_path / "four.jsonl")]
    assert main([*argv, "--concurrency", "4"]) == 0
    four = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert predictions(tmp_path / "four.jsonl") == predictions(tmp_path / "one.jsonl")
    assert all(s["score"] is not None for r in predictions(tmp_path / "one.jsonl") for s in r["steps"])
    assert (four["n"], four["em"], four["f1"]) == (one["n"], one["em"], one["f1"]) and one["n"] == 4


def test_eval_on_threads_keeps_several_model_requests_in_flight(tmp_path):
    from llm_fakes import plain_agent, register_scripted

    guard, inflight = threading.Lock(), {"now": 0, "most": 0}

    def slow_server(stage: str, text: str, index: int) -> str:  # counts the requests it serves at once
        with guard:
            inflight["now"] += 1
            inflight["most"] = max(inflight["most"], inflight["now"])
        time.sleep(0.05)
        with guard:
            inflight["now"] -= 1
        return plain_agent(stage, text, index)

    register_scripted("inflight-test", slow_server)
    argv = ["eval", *EVAL, "--llm", "inflight-test:plain", "--no-prm", "--policy-option", "n_candidates=1"]
    assert main([*argv, "--predictions", str(tmp_path / "one.jsonl")]) == 0
    assert inflight["most"] == 1
    assert main([*argv, "--predictions", str(tmp_path / "four.jsonl"), "--concurrency", "4"]) == 0
    assert inflight["most"] >= 2, "questions must wait on the model together, not in turn"
    assert predictions(tmp_path / "four.jsonl") == predictions(tmp_path / "one.jsonl")


# --- Ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "reasonrag[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow  # eval on Ray runs the same pool in the default suite; this one adds the labels file
def test_label_on_ray_writes_the_lines_of_a_local_run(ray_cluster, tmp_path, capsys):
    assert main(["label", *LABEL, "--split", "dev", "--out", str(tmp_path / "local.jsonl")]) == 0
    out = tmp_path / "ray.jsonl"
    assert main(["label", *LABEL, "--split", "dev", "--out", str(out), "--ray", "--workers", "2"]) == 0
    assert lines(out) == lines(tmp_path / "local.jsonl")
    # a rerun resumes: nothing new, nothing duplicated
    capsys.readouterr()
    assert main(["label", *LABEL, "--split", "dev", "--out", str(out), "--ray", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["questions_new"] == 0 and summary["questions_resumed"] == 2
    assert lines(out) == lines(tmp_path / "local.jsonl")


@pytest.fixture
def one_torch_thread():
    """A Ray worker runs torch on its one CPU's thread; float32 sums over 1 or 2 threads group differently
    (PRM scores then differ in the 8th digit), so the local run to compare with runs on one thread too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eval_on_ray_answers_as_a_local_run(ray_cluster, tmp_path, capsys, one_torch_thread):
    argv = ["eval", *EVAL, "--sample", "--seed", "5"]
    assert main([*argv, "--predictions", str(tmp_path / "local.jsonl")]) == 0
    local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--predictions", str(tmp_path / "ray.jsonl"), "--ray", "--workers", "2"]) == 0
    on_ray = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert predictions(tmp_path / "ray.jsonl") == predictions(tmp_path / "local.jsonl")
    assert (on_ray["n"], on_ray["em"], on_ray["prm_auroc"]) == (local["n"], local["em"], local["prm_auroc"])


def test_a_worker_that_dies_is_reported_as_its_own_one_line_error():
    from reasonrag.errors import ModelError
    from reasonrag.parallel.ray_pool import worker_error

    report = (
        "The actor died because of an error raised in its creation task\nTraceback (most recent call last):\n"
    )
    err = worker_error(report + "reasonrag.errors.ModelError: no reader in /x (expected manifest.json)")
    assert isinstance(err, ModelError) and str(err) == "no reader in /x (expected manifest.json)"
    other = worker_error(report + "ValueError: something else")
    assert other.code == "RAY_WORKER" and "ValueError: something else" in str(other)


def test_a_ray_address_where_nothing_listens_is_a_one_line_error_at_once(tmp_path, capsys):
    import socket

    pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "reasonrag[ray]"')
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    t0 = time.monotonic()
    args = ["--split", "dev", "--out", str(tmp_path / "x.jsonl"), "--ray-address", f"127.0.0.1:{port}"]
    assert main(["label", *LABEL, *args]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err.startswith("reasonrag: error [INVALID_INPUT]")
        and f"no Ray cluster answers at 127.0.0.1:{port}" in err
    )

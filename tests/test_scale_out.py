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
LABEL = [*TINY, "-k", "3", "--max-hops", "2", "--trajectories", "2", "--completions", "1", "--no-progress"]


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


# --- Ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "reasonrag[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


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

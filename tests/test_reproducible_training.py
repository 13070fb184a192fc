"""The same training command with the same seed writes byte-identical weights on one machine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reasonrag.cli.main import main

DATA = Path(__file__).parent / "data"
LABEL = [
    "label",
    "--corpus",
    str(DATA / "tiny_corpus.jsonl"),
    "--questions",
    str(DATA / "tiny_questions.jsonl"),
    "-k",
    "3",
    "--max-hops",
    "2",
    "--trajectories",
    "3",
    "--completions",
    "3",
    "--no-progress",
    "--json",
]


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> tuple[str, str]:
    """Train labels (the dev split of the tiny questions) and dev labels (its test split)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    out = tmp_path_factory.mktemp("labels")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*LABEL, "--split", "dev", "--out", str(out / "train.jsonl")]) == 0
            assert main([*LABEL, "--split", "test", "--out", str(out / "dev.jsonl")]) == 0
    finally:
        mp.undo()
    return str(out / "train.jsonl"), str(out / "dev.jsonl")


COMMANDS = {
    "train-prm": ["train-prm", "--epochs", "3"],
    "train-policy pg": ["train-policy", "--epochs", "2", "--process-reward", "mc"],
    "train-policy dpo": ["train-policy", "--epochs", "2", "--algorithm", "dpo"],
}


def command(name: str, labels: tuple[str, str], out: Path) -> list[str]:
    return [
        *COMMANDS[name],
        "--labels",
        labels[0],
        "--dev-labels",
        labels[1],
        "--out",
        str(out),
        "--no-progress",
    ]


@pytest.mark.parametrize(
    "name", ["train-prm", "train-policy pg", pytest.param("train-policy dpo", marks=pytest.mark.slow)]
)
def test_twice_in_one_process_gives_the_same_bytes(name, labels, tmp_path, capsys):
    """The second run starts with every random generator already moved on by the first."""
    for run in ("a", "b"):
        assert main(command(name, labels, tmp_path / run)) == 0
    printed = capsys.readouterr().out
    if name.startswith("train-policy"):  # what a person reads: no "epoch 0", no None, no -0.0
        assert "epoch 1:" in printed and "epoch 0" not in printed
        assert "None" not in printed and "-0.0," not in printed and not printed.rstrip().endswith("-0.0")
    first, second = (tmp_path / run / "model.safetensors" for run in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_two_processes_with_other_hash_seeds_give_the_same_bytes(name, labels, tmp_path):
    """Separate processes, each with its own string hashing (set order): the same weights and history."""
    results = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed, "REASONRAG_CACHE": str(tmp_path / "cache")}
        argv = [sys.executable, "-m", "reasonrag", *command(name, labels, out)]
        done = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in summary["history"]]
        results.append(((out / "model.safetensors").read_bytes(), history))
    assert results[0] == results[1]

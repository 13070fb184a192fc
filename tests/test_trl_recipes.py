"""The TRL recipes of docs/trl.md run for 2 steps on exported labels with a tiny random model (slow).

DPO and GRPO run on the trl this environment has. TRL's PRMTrainer left trl in 1.14, so the PRM recipe
runs in a subprocess that puts trl 1.13.0 (one pure-Python wheel, no dependencies) ahead of the installed
trl on its path: same torch and transformers, the old trainer, no second environment to keep.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llm_fakes import TEMPLATE
from prm_factories import _tokenizer
from test_trl_export import RECORDS

from reasonrag.training.trl_export import export_labels

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PRM_TRL = "trl==1.13.0"


def recipes():
    spec = importlib.util.spec_from_file_location("trl_recipes", ROOT / "scripts" / "trl_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_causal_lm(path: Path) -> Path:
    """A 2-layer random Llama with a chat template, saved as a model directory (no download)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = _tokenizer()
    tokenizer.chat_template = TEMPLATE
    tokenizer.eos_token = tokenizer.sep_token
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings["model_input_names"] = ["input_ids", "attention_mask"]  # a Llama takes no token_type_ids
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    return path


def trained_steps(out: Path, trainer) -> int:
    assert (out / "config.json").is_file()  # the trained model was saved where asked
    return trainer.state.global_step


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("trl")
    export_labels(RECORDS[:2] * 1, base / "dpo", "trl-dpo")
    export_labels(RECORDS, base / "prm", "trl-prm")
    return base


def test_dpo_recipe_trains_two_steps_on_the_exported_pairs(exported, tmp_path):
    pytest.importorskip("trl")
    model = tiny_causal_lm(tmp_path / "model")
    out = tmp_path / "dpo-out"
    argv = ["dpo", "--data", str(exported / "dpo"), "--model", str(model), "--out", str(out)]
    trainer = recipes().main(argv + ["--max-steps", "2", "--max-length", "512"])
    assert trained_steps(out, trainer) == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(x == x for x in losses)  # finite (not NaN)


def test_grpo_recipe_trains_two_steps_with_our_combined_reward(exported, tmp_path):
    pytest.importorskip("trl")
    model = tiny_causal_lm(tmp_path / "model")
    out = tmp_path / "grpo-out"
    argv = ["grpo", "--data", str(exported / "dpo"), "--model", str(model), "--out", str(out)]
    argv += ["--max-steps", "2", "--num-generations", "2", "--max-completion-length", "8"]
    trainer = recipes().main(argv)
    assert trained_steps(out, trainer) == 2
    rewards = [h for h in trainer.state.log_history if "rewards/reasonrag_combined_reward/mean" in h]
    assert len(rewards) == 2  # our reward function ran at every step


def _trl_113(target: Path) -> Path:
    """trl 1.13.0 installed into `target` alone (no dependencies): PRMTrainer left trl in 1.14."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), PRM_TRL],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"pip could not install {PRM_TRL}: {done.stderr.strip()[-500:]}"
    return target


def test_prm_recipe_trains_two_steps_on_trl_1_13(exported, tmp_path):
    from transformers import AutoModelForTokenClassification, BertConfig

    pytest.importorskip("datasets", reason='the TRL recipes need the trl extra: pip install "reasonrag[trl]"')
    site = _trl_113(tmp_path / "trl113")
    tokenizer = _tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = tmp_path / "model"
    AutoModelForTokenClassification.from_config(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    out = tmp_path / "prm-out"
    code = (
        "import json, sys, trl; sys.path.insert(0, sys.argv[1]); import trl_recipes; "
        "t = trl_recipes.main(sys.argv[2:]); print(json.dumps([trl.__version__, t.state.global_step]))"
    )
    argv = ["prm", "--data", str(exported / "prm"), "--model", str(model), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "scripts"), *argv, "--max-steps", "2", "--max-length", "256"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    version, steps = json.loads(done.stdout.strip().splitlines()[-1])
    assert version == "1.13.0" and steps == 2
    assert (out / "config.json").is_file()

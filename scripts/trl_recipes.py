"""Train an LLM policy or PRM with TRL on the datasets `reasonrag export` writes (docs/trl.md).

    accelerate launch scripts/trl_recipes.py dpo  --data exports/dpo  --model MODEL_DIR --out runs/dpo
    accelerate launch scripts/trl_recipes.py grpo --data exports/dpo  --model MODEL_DIR --out runs/grpo [--prm DIR]
    accelerate launch scripts/trl_recipes.py prm  --data exports/prm  --model MODEL_DIR --out runs/prm   # trl<=1.13

dpo   TRL's DPOTrainer on the process-level preference pairs (`--format trl-dpo`).
grpo  TRL's GRPOTrainer on the synthesize prompts of the same file, rewarded by our combined reward
      `alpha * R_outcome + (1 - alpha) * mean step score` (`reasonrag.training.trl_reward`): the outcome
      of the answer the model writes against the gold answers, and the PRM's scores of the path it ends.
prm   TRL's PRMTrainer (`trl.experimental.prm`, removed in trl 1.14) on the stepwise labels
      (`--format trl-prm`), a token-classification model with two labels.

Every run is a plain `accelerate launch` (or `python`) away: one GPU, several, or the CPU. `--max-steps`
bounds a run (the tests run each recipe for 2 steps on a tiny random model). A model trained by `dpo` or
`grpo` is a causal LM directory that `--llm hf:DIR` drives as the agent's policy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

COMMON = dict(report_to=[], save_strategy="no", logging_steps=1, seed=0)


def common() -> dict[str, Any]:
    """Options every recipe shares; bf16 only where the accelerator has it (TRL's default assumes one)."""
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return {**COMMON, "bf16": bf16}


def load_rows(data: str) -> Any:
    from datasets import load_dataset

    path = Path(data)
    files = str(path / "train.jsonl") if path.is_dir() else str(path)
    return load_dataset("json", data_files=files, split="train")


def run_dpo(args: argparse.Namespace) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    config = DPOConfig(
        output_dir=args.out,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        beta=args.beta,
        max_length=args.max_length,
        **common(),
    )
    trainer = DPOTrainer(
        model=model, args=config, train_dataset=load_rows(args.data), processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(args.out)
    return trainer


def run_grpo(args: argparse.Namespace) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from reasonrag.training.trl_reward import combined_reward_function

    prm = None
    if args.prm:
        from reasonrag.prm.loading import load_prm

        prm = load_prm(args.prm)
    rows = load_rows(args.data)
    rows = rows.filter(lambda r: r["stage"] == "synthesize")  # the outcome is known for answers
    rows = rows.remove_columns([c for c in ("chosen", "rejected") if c in rows.column_names])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    config = GRPOConfig(
        output_dir=args.out,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        beta=args.beta,
        **common(),
    )
    reward = combined_reward_function(prm, alpha=args.alpha, outcome=args.outcome)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=rows, processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(args.out)
    return trainer


def run_prm(args: argparse.Namespace) -> Any:
    try:
        from trl.experimental.prm import PRMConfig, PRMTrainer
    except ImportError:
        import trl

        sys.exit(
            f"trl {trl.__version__} has no PRMTrainer (it left trl.experimental in 1.14): "
            'pip install "trl==1.13.0" in an environment of its own (docs/trl.md)'
        )
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=2)
    config = PRMConfig(
        output_dir=args.out,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        step_separator="\n",
        **common(),
    )
    trainer = PRMTrainer(
        model=model, args=config, train_dataset=load_rows(args.data), processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(args.out)
    return trainer


RECIPES = {"dpo": run_dpo, "grpo": run_grpo, "prm": run_prm}


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("--data", required=True, help="an export directory (or its train.jsonl)")
    ap.add_argument("--model", required=True, help="a local model directory (or a hub name you choose)")
    ap.add_argument("--out", required=True, help="where the trained model goes")
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: 1 epoch)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.1, help="DPO beta, or GRPO's KL weight")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--num-generations", type=int, default=4, help="GRPO: completions per prompt")
    ap.add_argument("--max-completion-length", type=int, default=48, help="GRPO: tokens per completion")
    ap.add_argument("--alpha", type=float, default=0.5, help="GRPO: outcome weight of the combined reward")
    ap.add_argument("--outcome", default="f1", choices=["em", "f1", "cover_em"], help="GRPO: outcome metric")
    ap.add_argument("--prm", default=None, help="GRPO: a reasonrag PRM directory for the process part")
    args = ap.parse_args(argv)
    return RECIPES[args.recipe](args)


if __name__ == "__main__":
    main()

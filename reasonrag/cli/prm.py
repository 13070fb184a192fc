"""`reasonrag train-prm` and `reasonrag eval-prm`: train the stage-specific PRMs and measure them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reasonrag.cli.checks import check_model_dir, check_output_dir, float_in, int_in
from reasonrag.data.limits import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_HIDDEN, MAX_SEED
from reasonrag.errors import InputError


def _gold_questions(records: list[dict], corpus: str | None, questions: str | None = None) -> dict:
    """Questions (with gold evidence) by id: a --questions file, --corpus, or the corpora the labels name."""
    from reasonrag.data.corpus import Corpus, load_questions

    if questions:
        return {q.id: q for q in load_questions(questions)}
    names = [corpus] if corpus else sorted({r.get("corpus") for r in records if r.get("corpus")})
    out = {}
    for name in names:
        out.update({q.id: q for q in Corpus.load(name).questions(None)})
    return out


def _print_stage_table(title: str, metrics: dict) -> None:
    print(f"  {title}")
    for stage, m in metrics.items():
        auc = "-" if m["auroc"] is None else f"{m['auroc']:.3f}"
        f1 = "-" if m["f1"] is None else f"{m['f1']:.3f}"
        print(f"    {stage:<11} AUROC {auc:>6}  F1 {f1:>6}  steps {m['n']:>6}  positive {m['positive_rate']}")


def cmd_train_prm(args: argparse.Namespace) -> int:
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.prm_training import PRMTrainingConfig, check_dev_labels, train_prm
    from reasonrag.training.reproducible import seed_everything

    # Everything about the inputs is checked before a model loads.
    check_output_dir(args.out)
    train = read_labels(args.labels)
    dev = read_labels(args.dev_labels)
    if args.target in ("gold", "mix"):
        from reasonrag.training.prm_training import attach_gold

        gold = _gold_questions(train + dev, args.corpus, args.questions)
        attach_gold(train, gold)
        attach_gold(dev, gold)
        if not all("gold" in r for r in dev):
            raise InputError(
                "--target gold/mix stops early on gold step labels: the dev labels need them too"
            )
    check_dev_labels(dev, args.target)
    seed_everything(args.seed)
    if args.model == "encoder":
        from reasonrag.prm.encoder_prm import EncoderPRM, EncoderPRMConfig

        model = EncoderPRM(
            config=EncoderPRMConfig(hidden=args.hidden, dropout=args.dropout, inputs=args.inputs),
            encoder_name=args.encoder,
        )
        lr = args.lr if args.lr is not None else 1e-3
    else:
        from reasonrag.prm.transformers_prm import TransformersPRM

        model = TransformersPRM.from_base(args.model, mode=args.mode)
        lr = args.lr if args.lr is not None else 5e-5
    config = PRMTrainingConfig(
        target=args.target,
        gold_weight=args.gold_weight,
        epochs=args.epochs,
        lr=lr,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        fraction=args.fraction,
    )
    command = "reasonrag train-prm " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train-prm"] else None
    result = train_prm(
        model,
        train,
        dev,
        args.out,
        config,
        progress=not args.no_progress,
        manifest={"labels": [str(p) for p in args.labels], "command": command},
    )
    best = next((h for h in result["history"] if h["epoch"] == result["best_epoch"]), None)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"PRM saved to {result['out']}: best epoch {result['best_epoch']} of {result['epochs_run']}, "
        f"{result['train_labeled_steps']} labeled steps, {result['seconds']}s"
    )
    if best:
        _print_stage_table("dev, against MC labels:", best["per_stage"])
    return 0


def cmd_eval_prm(args: argparse.Namespace) -> int:
    from reasonrag.prm.evaluation import evaluate_prm
    from reasonrag.prm.loading import load_prm
    from reasonrag.training.labeling import read_labels

    check_model_dir(args.prm, "--prm", "reasonrag train-prm")
    records = read_labels(args.labels)
    gold = _gold_questions(records, args.corpus, args.questions)
    prm = load_prm(args.prm, encoder_name=args.encoder)
    result = evaluate_prm(prm, records, gold)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"PRM {args.prm or '(shipped)'} on {result['trajectories']} labeled trajectories")
    _print_stage_table("against MC labels (any rollout succeeded):", result["vs_mc"])
    if "vs_gold" in result:
        _print_stage_table("against gold evidence:", result["vs_gold"])
        _print_stage_table("the MC values themselves against gold evidence:", result["mc_vs_gold"])
    return 0


def add_train_parser(sub: Any) -> None:
    """Register `reasonrag train-prm`."""
    p = sub.add_parser(
        "train-prm",
        help="train the stage-specific PRMs from step labels",
        description="Train a PRM with step-level binary cross-entropy on labeled steps (unlabeled ones "
        "masked), keeping the epoch with the best mean per-stage AUROC on --dev-labels. --model encoder "
        "(default) trains small heads on the sentence encoder; any Hugging Face model name or path "
        "trains a one-pass transformers PRM.",
    )
    p.add_argument(
        "--labels", nargs="+", required=True, help="training labels JSONL file(s) from `reasonrag label`"
    )
    p.add_argument(
        "--dev-labels", nargs="+", required=True, help="labels of dev questions, for early stopping"
    )
    p.add_argument("--out", required=True, help="model directory to write (manifest.json + safetensors)")
    p.add_argument("--model", default="encoder", help="'encoder' (default) or a Hugging Face model name/path")
    p.add_argument(
        "--mode",
        default="token-classification",
        choices=["token-classification", "reward-token"],
        help="how a transformers PRM reads step scores (default: token-classification)",
    )
    p.add_argument(
        "--encoder", default=None, help="sentence encoder for --model encoder (default: the package)"
    )
    p.add_argument(
        "--target",
        default="soft",
        choices=["soft", "hard", "gold", "mix"],
        help="soft MC values (default), hard MC labels, gold-evidence step labels of the training questions, "
        "or a mix of gold and soft",
    )
    p.add_argument(
        "--gold-weight",
        type=float_in(0.0, 1.0),
        default=0.5,
        help="weight of gold labels in --target mix, 0 to 1 (default: 0.5)",
    )
    p.add_argument(
        "--hidden",
        type=int_in(1, MAX_HIDDEN),
        default=256,
        help=f"encoder PRM: hidden units per stage head, 1 to {MAX_HIDDEN} (default: 256)",
    )
    p.add_argument(
        "--dropout",
        type=float_in(0.0, 1.0, high_open=True),
        default=0.1,
        help="encoder PRM: dropout in the heads, in [0, 1) (default: 0.1)",
    )
    p.add_argument(
        "--inputs",
        default="full",
        choices=["full", "interactions"],
        help="encoder PRM: all embeddings and products, or only the products and numbers (default: full)",
    )
    p.add_argument("--corpus", default=None, help="corpus with the gold evidence (default: from the labels)")
    p.add_argument(
        "--questions", default=None, help="questions JSONL with the gold evidence (instead of --corpus)"
    )
    p.add_argument(
        "--epochs",
        type=int_in(1, MAX_EPOCHS),
        default=40,
        help=f"most epochs, 1 to {MAX_EPOCHS} (default: 40)",
    )
    p.add_argument(
        "--lr",
        type=float_in(0.0, 10.0, low_open=True),
        default=None,
        help="learning rate (default: 1e-3 encoder, 5e-5 transformers)",
    )
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH_SIZE),
        default=32,
        help=f"trajectories per update, 1 to {MAX_BATCH_SIZE} (default: 32)",
    )
    p.add_argument(
        "--patience",
        type=int_in(1, MAX_EPOCHS),
        default=6,
        help="epochs without dev gain before stopping (default: 6)",
    )
    p.add_argument(
        "--fraction",
        type=float_in(0.0, 1.0, low_open=True),
        default=1.0,
        help="train on this share of the questions, in (0, 1] (default: 1)",
    )
    p.add_argument(
        "--seed",
        type=int_in(0, MAX_SEED),
        default=0,
        help="seeds every random choice: the same seed writes the same weights (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_prm)


def add_eval_parser(sub: Any) -> None:
    """Register `reasonrag eval-prm`."""
    p = sub.add_parser(
        "eval-prm",
        help="measure a PRM: per-stage AUROC/F1 against MC labels and gold evidence",
        description="Score labeled trajectories with a PRM and report, per stage, AUROC and F1 against "
        "the MC labels and against gold evidence (retrieve: a gold paragraph came in; extract: a gold "
        "supporting sentence was kept; synthesize: the answer matches), and how well the MC values "
        "themselves track gold evidence.",
    )
    p.add_argument("--labels", nargs="+", required=True, help="labels JSONL file(s) to score")
    p.add_argument("--prm", default=None, help="PRM directory (default: the shipped one)")
    p.add_argument(
        "--corpus",
        default=None,
        help="corpus whose questions hold the gold evidence (default: from the labels)",
    )
    p.add_argument(
        "--encoder", default=None, help="sentence encoder for an encoder PRM (default: the package)"
    )
    p.add_argument(
        "--questions", default=None, help="questions JSONL holding the gold evidence (instead of --corpus)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_prm)

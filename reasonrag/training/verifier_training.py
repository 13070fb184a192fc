"""Train the verifier PRM (`CrossEncoderPRM`) on exact step labels of the training questions.

    python -m reasonrag.training.verifier_training --out runs/verifier/model --extra PATH/train_extra.json

No rollouts are needed: the labels are exact, from each question's gold. The agent's own paths over the
whole corpus (`verifier_paths`) give the states the verifier meets at inference, with every candidate the
policy would try there executed and labeled; closed pools of each question's own paragraphs
(`verifier_pool`) add evidence sets with the gold handed over. Training is the step BCE plus a listwise
loss over each state's siblings (`verifier_ranking`); the dev questions' paths choose the epoch.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasonrag.data.corpus import Corpus
from reasonrag.data.types import STAGES
from reasonrag.prm.cross_encoder import CrossEncoderPRM, CrossEncoderPRMConfig, step_pair, step_prob
from reasonrag.prm.evaluation import auroc
from reasonrag.training.checkpoints import load_checkpoint, save_checkpoint
from reasonrag.training.verifier_pool import build_examples, corpus_questions, extra_questions
from reasonrag.training.verifier_ranking import (
    grouped_batches,
    listwise_loss,
    sibling_choice,
    sibling_groups,
    stage_group,
)


@dataclass
class VerifierTrainingConfig:
    corpora: list[str] = field(default_factory=lambda: ["hotpotqa", "2wikimultihopqa"])
    extra: list[str] = field(default_factory=list)  # more training questions, HotpotQA's official schema
    epochs: int = 2
    lr: float = 4e-5
    head_lr: float = 1e-3
    batch_size: int = 32
    expand: int = 4  # candidates executed per stage
    answers: int = 6  # candidate answers labeled per answer state
    k: int = 5  # passages per search
    max_hops: int = 3
    seed: int = 0
    limit: int | None = None  # training questions per source, for quick runs
    dev_limit: int = 100  # dev questions per corpus
    checkpoint_every: int = 200  # batches between checkpoints
    # Weight of the listwise sibling loss beside the step BCE; with it, batches hold whole sibling groups.
    listwise: float = 1.0


def _pair(e: dict, prm: CrossEncoderPRM) -> tuple[str, str]:
    return step_pair(e["question"], e["steps"], len(e["steps"]) - 1, prm.config.evidence_chars)


def _prob(e: dict) -> float:
    return step_prob(e["steps"][-1])


def cache_states(
    prm: CrossEncoderPRM, examples: list[dict], desc: str, path: Path | None = None
) -> list[torch.Tensor]:
    """The frozen trunk's states of every example, computed once (see `CrossEncoderPRM.trunk_states`).

    With `path`, they are kept there and read back by a later run on the same pairs and model settings
    (the file names a hash of both), so a rerun or a second recipe skips the trunk."""
    import hashlib

    from tqdm import tqdm

    pairs = [_pair(e, prm) for e in examples]
    if path is not None:
        digest = hashlib.sha256(json.dumps([asdict(prm.config), pairs]).encode()).hexdigest()[:16]
        path = path.with_name(f"{path.name}-{digest}.pt")
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            return list(torch.split(saved["states"], saved["lengths"]))
    prm.eval()
    out: list[torch.Tensor] = []
    for i in tqdm(range(0, len(pairs), 64), desc=desc, unit="batch", file=sys.stderr):
        out.extend(prm.trunk_states(pairs[i : i + 64]))
    if path is not None and out:
        tmp = path.with_suffix(".partial")
        torch.save({"states": torch.cat(out), "lengths": [int(s.shape[0]) for s in out]}, tmp)
        tmp.replace(path)
    return out


@torch.inference_mode()
def score_states(prm: CrossEncoderPRM, states: list[torch.Tensor], examples: list[dict]) -> list[float]:
    prm.eval()
    out: list[float] = []
    for i in range(0, len(examples), 64):
        chunk = examples[i : i + 64]
        stages, probs = [e["stage"] for e in chunk], [_prob(e) for e in chunk]
        out.extend(prm.top_logits(states[i : i + 64], stages, probs).sigmoid().tolist())
    return out


def auroc_by_group(scores: Sequence[float], examples: Sequence[dict]) -> dict[str, float | None]:
    """AUROC per stage (answers apart from "another hop"), rounded; None where one class is missing."""
    out = {}
    for group in (*STAGES, "continue"):
        pairs = [(s, e["label"]) for s, e in zip(scores, examples) if stage_group(e) == group]
        a = auroc([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None
        out[group] = None if a is None else round(a, 4)
    return out


def evaluate_examples(prm: CrossEncoderPRM, examples: list[dict]) -> dict[str, float | None]:
    prm.eval()
    scores: list[float] = []
    for i in range(0, len(examples), 64):
        scores.extend(prm.score_last(examples[i : i + 64]))
    return auroc_by_group(scores, examples)


def _mean(values: dict[str, float | None], keys: Sequence[str] = STAGES) -> float:
    got = [values[k] for k in keys if values.get(k) is not None]
    return sum(got) / len(got) if got else 0.0


def train_verifier(
    prm: CrossEncoderPRM,
    train: list[dict],
    dev: dict[str, list[dict]],
    out: str | Path,
    config: VerifierTrainingConfig,
    manifest: dict | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Step-level BCE on the last step of each example, plus `config.listwise` times the listwise sibling
    loss (`verifier_ranking`); the epoch with the best `dev_choice` (mean dev AUROC, averaged with the
    mean sibling top-1 where the first dev set has sibling groups) is saved.

    `dev` maps a name to its examples; the first one chooses the epoch (the agent's own paths when
    there are any). The frozen trunk's states are computed once; only the top layers run per batch. With
    `checkpoint`, the weights, optimizer and position are saved every `config.checkpoint_every` batches
    and at each epoch's end, and a rerun resumes from them: the same weights as an uninterrupted run.
    """
    from tqdm import tqdm

    from reasonrag.training.reproducible import seed_everything

    seed_everything(config.seed)
    head = list(prm.model["head"].parameters())
    layers = [p for n, p in prm.model["backbone"].named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": layers, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=0.01
    )
    groups = sibling_groups(train)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    batches = -(-len(train) // config.batch_size)
    if config.listwise > 0:  # whole groups leave batches part-empty: as many as epoch 1 has
        batches = len(grouped_batches(groups, config.batch_size, f"{config.seed}|epoch 1"))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 50) * max(0.0, 1 - i / max(1, batches * config.epochs))
    )
    position = {"epoch": 1, "batch": 0, "history": [], "best": -1.0, "seconds": 0.0}
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and (ckpt / "position.json").is_file():
        position = load_checkpoint(ckpt, prm.model, opt, sched)
        print(f"resuming at epoch {position['epoch']}, batch {position['batch']}", file=sys.stderr)
    cache = None if ckpt is None else ckpt.parent / "trunk"
    train_states = cache_states(prm, train, "trunk states, train", cache and cache.with_name("trunk-train"))
    dev_states = {
        name: cache_states(prm, ex, f"trunk states, {name}", cache and cache.with_name(f"trunk-dev-{name}"))
        for name, ex in dev.items()
    }
    t0 = time.time() - position["seconds"]
    for epoch in range(position["epoch"], config.epochs + 1):
        seed = f"{config.seed}|epoch {epoch}"
        if config.listwise > 0:
            order_batches = grouped_batches(groups, config.batch_size, seed)
        else:
            order = list(range(len(train)))
            random.Random(seed).shuffle(order)
            order_batches = [
                order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
            ]
        prm.train()
        first = position["batch"] if epoch == position["epoch"] else 0
        bar = tqdm(range(first, len(order_batches)), desc=f"epoch {epoch}", unit="batch", file=sys.stderr)
        for b in bar:
            idx = order_batches[b]
            logits = prm.top_logits(
                [train_states[i] for i in idx],
                [train[i]["stage"] for i in idx],
                [_prob(train[i]) for i in idx],
            )
            labels = [train[i]["label"] for i in idx]
            target = torch.tensor([float(x) for x in labels])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            if config.listwise > 0:
                loss = loss + config.listwise * listwise_loss(logits, labels, [group_of[i] for i in idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if ckpt is not None and (b + 1) % config.checkpoint_every == 0 and b + 1 < len(order_batches):
                position.update(epoch=epoch, batch=b + 1, seconds=time.time() - t0)
                save_checkpoint(ckpt, prm.trainable_state(), opt, sched, position)
        record: dict[str, Any] = {"epoch": epoch}
        for name, ex in dev.items():
            scores = score_states(prm, dev_states[name], ex)
            record[f"dev_auroc_{name}"] = auroc_by_group(scores, ex)
            if any("question_id" in e for e in ex):
                record[f"dev_sibling_top1_{name}"] = sibling_choice(scores, ex)
        first_dev = next(iter(dev))
        record["dev_mean_auroc"] = round(_mean(record[f"dev_auroc_{first_dev}"]), 4)
        # The epoch is chosen by what a critic needs as much as by AUROC: the mean of the two where the
        # first dev set has sibling groups.
        top1 = [v["verifier"] / 100 for v in record.get(f"dev_sibling_top1_{first_dev}", {}).values()]
        record["dev_choice"] = round(
            (record["dev_mean_auroc"] + sum(top1) / len(top1)) / 2 if top1 else record["dev_mean_auroc"], 4
        )
        position["history"].append(record)
        print(json.dumps(record), file=sys.stderr)
        if record["dev_choice"] > position["best"]:
            position["best"] = record["dev_choice"]
            prm.save(
                out,
                {
                    "training": asdict(config),
                    "history": position["history"],
                    "train_examples": len(train),
                    **(manifest or {}),
                },
            )
        position.update(epoch=epoch + 1, batch=0, seconds=time.time() - t0)
        if ckpt is not None:
            save_checkpoint(ckpt, prm.trainable_state(), opt, sched, position)
    return {"out": str(out), "history": position["history"], "seconds": round(time.time() - t0, 1)}


def _counts(name: str, examples: list[dict]) -> str:
    groups = (*STAGES, "continue")
    n = {g: sum(1 for e in examples if stage_group(e) == g) for g in groups}
    pos = {g: sum(e["label"] for e in examples if stage_group(e) == g) for g in groups}
    return f"{name}: {len(examples)} labeled steps {n}, positive {pos}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reasonrag.training.verifier_training",
        description="Train the verifier PRM (a cross-encoder) on exact step labels: the agent's own paths "
        "over the whole corpora and closed pools of each question's own paragraphs. Every part resumes "
        "after a kill: rerun the same command.",
    )
    ap.add_argument("--out", required=True, help="directory of the trained verifier")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="more training questions (HotpotQA official schema JSON)"
    )
    ap.add_argument(
        "--work",
        default="runs/verifier",
        help="where labeled examples and checkpoints are kept between runs (default: runs/verifier)",
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="training questions per source")
    ap.add_argument("--dev-limit", type=int, default=100, help="dev questions per corpus")
    ap.add_argument(
        "--path-limit",
        type=int,
        default=None,
        help="training questions per corpus walked over the whole corpus (default: all)",
    )
    ap.add_argument("--no-pool", action="store_true", help="train on the agent's own paths only")
    ap.add_argument("--train-layers", type=int, default=2)
    ap.add_argument(
        "--no-prob-feature",
        action="store_true",
        help="the head reads the text alone, not the policy's probability",
    )
    ap.add_argument(
        "--max-pool-examples",
        type=int,
        default=20000,
        help="closed-pool training steps kept (a seeded sample; the agent's own paths are all kept)",
    )
    ap.add_argument("--max-length", type=int, default=128, help="tokens per question-step pair")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-5)
    ap.add_argument(
        "--listwise",
        type=float,
        default=VerifierTrainingConfig.listwise,
        help="weight of the listwise loss over each state's sibling candidates beside the step BCE; "
        f"0 trains on the BCE alone in shuffled batches (default: {VerifierTrainingConfig.listwise})",
    )
    ap.add_argument(
        "--max-examples", type=int, default=None, help="train on a seeded sample of this many steps"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for path in args.extra:
        if not Path(path).is_file():
            ap.error(f"--extra {path}: no such file")
    if args.epochs < 1 or args.batch_size < 1:
        ap.error("--epochs and --batch-size must be at least 1")
    from reasonrag.agent.graph import agent_steps
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.retrieval.retriever import DenseRetriever
    from reasonrag.training.verifier_paths import build_path_examples

    config = VerifierTrainingConfig(
        extra=list(args.extra),
        epochs=args.epochs,
        limit=args.limit,
        dev_limit=args.dev_limit,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        listwise=args.listwise,
    )
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    policy = EmbeddedPolicy()
    corpora = {name: Corpus.load(name) for name in config.corpora}
    searches = {name: DenseRetriever(c) for name, c in corpora.items()}
    train: list[dict] = []
    dev: dict[str, list[dict]] = {"paths": []}
    for name, corpus in corpora.items():  # the agent's own paths, resumable per question
        steps = agent_steps(corpus, policy=policy, retriever=searches[name])
        path_limit = args.path_limit if args.path_limit is not None else config.limit
        qs = corpus.questions("train")[:path_limit]
        train += build_path_examples(qs, steps, work / "paths-train.jsonl", f"{name} train paths")
        qs = corpus.questions("dev")[: config.dev_limit]
        dev["paths"] += build_path_examples(qs, steps, work / "paths-dev.jsonl", f"{name} dev paths")
    if not args.no_pool:
        pool = work / f"pool-{config.limit}-{config.dev_limit}.json"
        if pool.is_file():
            data = json.loads(pool.read_text())
        else:
            train_pairs = [
                (q, p, searches[n])
                for n in config.corpora
                for q, p in corpus_questions(n, "train", config.limit)
            ]
            for path in config.extra:
                train_pairs += [(q, p, None) for q, p in extra_questions(path, config.limit)]
            dev_pairs = [
                (q, p, searches[n])
                for n in config.corpora
                for q, p in corpus_questions(n, "dev", config.dev_limit)
            ]
            data = {
                "train": build_examples(train_pairs, policy, config, "train questions, closed pools"),
                "dev": build_examples(dev_pairs, policy, config, "dev questions, closed pools"),
            }
            tmp = pool.with_suffix(".partial")
            tmp.write_text(json.dumps(data))
            tmp.replace(pool)
        pool_train = data["train"]
        if args.max_pool_examples is not None and len(pool_train) > args.max_pool_examples:
            pool_train = random.Random(config.seed).sample(pool_train, args.max_pool_examples)
        train += pool_train
        dev["pool"] = data["dev"]
    if args.max_examples is not None and len(train) > args.max_examples:
        train = random.Random(config.seed).sample(train, args.max_examples)
    print(_counts("train", train), file=sys.stderr)
    for name, ex in dev.items():
        print(_counts(f"dev {name}", ex), file=sys.stderr)
    torch.manual_seed(config.seed)
    prm = CrossEncoderPRM(
        CrossEncoderPRMConfig(
            train_layers=args.train_layers, max_length=args.max_length, prob_feature=not args.no_prob_feature
        )
    )
    command = "python -m reasonrag.training.verifier_training " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    import hashlib

    recipe = json.dumps([asdict(config), asdict(prm.config), len(train)], sort_keys=True)
    checkpoint = work / f"checkpoint-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"  # one per recipe
    result = train_verifier(prm, train, dev, args.out, config, {"command": command}, checkpoint=checkpoint)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

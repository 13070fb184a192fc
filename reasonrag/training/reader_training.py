"""Train the embedded reader on the `train` split of the shipped corpora.

    python -m reasonrag.training.reader_training --out reasonrag/weights/reader \
        --extra PATH/hotpotqa/train_extra.json

Each training question yields windows that mimic what the agent shows the reader: a retrieved passage
alone (first hop), a passage after the evidence of another hop (second hop), all gold evidence with
distractor sentences (answer), and only part of it (insufficient). Choices are made on `dev`: the
epoch with the best mean of dev answer F1 and sentence accuracy is the one saved. Checkpoints under
`--work` let a killed run resume where it stopped, with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonrag.data.corpus import Corpus
from reasonrag.data.rewards import exact_match, f1_score
from reasonrag.data.types import Passage, Question
from reasonrag.policies.reader import (
    KINDS,
    Chunk,
    ReaderModel,
    Window,
    _backbone_from_encoder,
    collate,
    make_window,
    render_context,
    trainable_state,
)
from reasonrag.training.checkpoints import load_checkpoint, save_checkpoint
from reasonrag.training.reader_examples import Example, find_span


@dataclass
class ReaderTrainingConfig:
    """Everything that decides the shipped reader; saved in its manifest."""

    corpora: list[str] = field(default_factory=lambda: ["hotpotqa", "2wikimultihopqa"])
    epochs: int = 4
    lr: float = 1e-4
    head_lr_scale: float = 10.0  # fresh heads learn faster than the pretrained layers under them
    batch_size: int = 16
    max_length: int = 256
    train_layers: int = 4  # the top N transformer layers are trained, the rest stay as in the encoder
    seed: int = 0
    limit: int | None = None  # questions per corpus, for quick runs
    encoder: str | None = None
    extra: list[str] = field(default_factory=list)  # more training questions, HotpotQA's official schema
    cloze: int = 0  # self-supervised cloze windows from the training paragraphs, added to every epoch
    cloze_only: bool = False  # train on the cloze windows alone (pretraining; dev still measures answers)
    init: str | None = None  # start from this reader's weights (a pretrained one)
    checkpoint_every: int = 100  # batches between checkpoints


def _supporting(question: Question) -> dict[str, set[int]]:
    facts: dict[str, set[int]] = {}
    for pid, idx in question.metadata.get("supporting_facts", []):
        facts.setdefault(pid, set()).add(int(idx))
    for pid in question.metadata.get("gold_passages", []):
        facts.setdefault(pid, set())
    return facts


def _answer_kind(question: Question) -> str:
    answer = question.golden_answers[0].strip().lower()
    return answer if answer in ("yes", "no") else "span"


def _inside(window: Window, span: tuple[int, int], ranges: list[tuple[int, int]]) -> bool:
    c0 = window.offsets[span[0]][0]
    return any(a <= c0 < b for a, b in ranges)


class ExampleBuilder:
    """Turns one question into supervised reader windows."""

    def __init__(self, corpus: Corpus, tokenizer, max_length: int, rng: random.Random) -> None:
        self.corpus, self.tokenizer, self.max_length, self.rng = corpus, tokenizer, max_length, rng

    def _negatives(self, question: Question, gold: set[str], n: int) -> list[Passage]:
        pool = [pid for pid in question.metadata.get("context_passages", []) if pid not in gold]
        if len(pool) < n:
            pool += [p.id for p in self.rng.sample(self.corpus.passages, n) if p.id not in gold]
        return [self.corpus.by_id(pid) for pid in self.rng.sample(pool, min(n, len(pool)))]

    def _example(self, question, chunks, labels_by_chunk, kind, prefer_answer=True) -> Example:
        w = make_window(self.tokenizer, question.question, chunks, self.max_length)
        sentence_labels = [labels_by_chunk[c][s] for c, s in w.sentences]
        start = end = -100
        kind_id = KINDS.index(kind) if kind else -100
        if kind in ("span", None) and _answer_kind(question) == "span":
            _, spans = render_context(chunks)
            support = [(a, b) for c, s, a, b in spans if labels_by_chunk[c][s] == 1.0]
            found = find_span(w, question.golden_answers, support)
            # Outside answer windows, teach "where the answer is" only when it sits in gold evidence.
            if found is not None and (kind == "span" or _inside(w, found, support)):
                start, end = found
        return Example(w, sentence_labels, kind_id, start, end)

    def build(self, question: Question) -> list[Example]:
        support = _supporting(question)
        gold = [pid for pid in support if pid in self.corpus]
        if not gold:
            return []
        gold_p = [self.corpus.by_id(pid) for pid in gold]
        has_sentences = bool(question.metadata.get("supporting_facts"))
        examples: list[Example] = []

        def full(p: Passage) -> Chunk:
            return Chunk(p.title, p.sentences, p.id)

        def labels(p: Passage) -> list[float]:
            if not has_sentences:
                return [-1.0] * len(p.sentences)
            return [1.0 if i in support.get(p.id, ()) else 0.0 for i in range(len(p.sentences))]

        def evidence(p: Passage) -> Chunk:
            idx = sorted(support.get(p.id, ())) or [0]
            return Chunk(p.title, tuple(p.sentences[i] for i in idx if i < len(p.sentences)), p.id)

        negatives = self._negatives(question, set(gold), 3)
        rng = self.rng
        # First hop: a lone passage, gold or a hard negative.
        p = rng.choice(gold_p) if rng.random() < 0.6 or not negatives else negatives[0]
        examples.append(self._example(question, [full(p)], [labels(p)], None))
        # Second hop: the evidence of one gold passage, then another gold passage or a hard negative.
        if len(gold_p) >= 2:
            first = rng.choice(gold_p)
            others = [g for g in gold_p if g.id != first.id]
            p = rng.choice(others) if rng.random() < 0.6 or len(negatives) < 2 else negatives[1]
            ev = evidence(first)
            examples.append(
                self._example(question, [ev, full(p)], [[-1.0] * len(ev.sentences), labels(p)], None)
            )
        # Answer: all gold evidence, shuffled, with up to two distractor sentences (two variants).
        for _ in range(2):
            chunks = [evidence(p) for p in gold_p]
            lab = [[1.0 if has_sentences else -1.0] * len(c.sentences) for c in chunks]
            for p in negatives[2 : 2 + rng.randint(0, 1)] + negatives[:1] * rng.randint(0, 1):
                i = rng.randrange(len(p.sentences))
                chunks.append(Chunk(p.title, (p.sentences[i],), p.id))
                lab.append([0.0 if has_sentences else -1.0])
            order = list(range(len(chunks)))
            rng.shuffle(order)
            examples.append(
                self._example(
                    question, [chunks[i] for i in order], [lab[i] for i in order], _answer_kind(question)
                )
            )
        # Insufficient: evidence of all but one gold passage (every other question).
        if len(gold_p) >= 2 and rng.random() < 0.5:
            drop = rng.randrange(len(gold_p))
            part = [evidence(p) for i, p in enumerate(gold_p) if i != drop]
            examples.append(
                self._example(question, part, [[-1.0] * len(c.sentences) for c in part], "insufficient")
            )
        return examples


def _loss(out: dict, batch_labels: list[Example]) -> torch.Tensor:
    device = out["start_logits"].device
    kinds = torch.tensor([e.kind for e in batch_labels], device=device)
    starts = torch.tensor([e.start for e in batch_labels], device=device)
    ends = torch.tensor([e.end for e in batch_labels], device=device)
    loss = torch.zeros((), device=device)
    if (kinds != -100).any():
        loss = loss + nn.functional.cross_entropy(out["kind_logits"], kinds, ignore_index=-100)
    if (starts != -100).any():
        loss = loss + 0.5 * (
            nn.functional.cross_entropy(out["start_logits"], starts, ignore_index=-100)
            + nn.functional.cross_entropy(out["end_logits"], ends, ignore_index=-100)
        )
    n_sent = out["sentence_logits"].shape[1]
    targets = torch.full((len(batch_labels), n_sent), -1.0, device=device)
    for i, e in enumerate(batch_labels):
        if e.sentence_labels:
            targets[i, : len(e.sentence_labels)] = torch.tensor(e.sentence_labels)
    mask = targets >= 0
    if mask.any():
        loss = loss + nn.functional.binary_cross_entropy_with_logits(
            out["sentence_logits"][mask], targets[mask]
        )
    return loss


def _batches(examples: list[Example], size: int, rng: random.Random) -> list[list[Example]]:
    """Length-bucketed shuffled batches: less padding, same randomness."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].window.input_ids) + rng.random() * 40)
    batches = [[examples[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


@torch.inference_mode()
def evaluate_reader(
    model: ReaderModel, examples: list[Example], questions: dict[int, Question], pad_id: int
) -> dict:
    """Answer EM/F1 on gold-evidence windows and sentence accuracy on hop windows."""
    from reasonrag.policies.reader import best_spans

    model.eval()
    em = f1 = n_ans = 0.0
    sent_correct = sent_total = 0
    for j in range(0, len(examples), 32):
        chunk = examples[j : j + 32]
        batch = collate([e.window for e in chunk], pad_id)
        out = model(**batch)
        for i, e in enumerate(chunk):
            probs = out["sentence_logits"][i, : len(e.sentence_labels)].sigmoid()
            for p, y in zip(probs.tolist(), e.sentence_labels):
                if y >= 0:
                    sent_correct += int((p > 0.5) == (y > 0.5))
                    sent_total += 1
            if e.kind in (0, 1, 2):
                q = questions[id(e)]
                kind = KINDS[int(out["kind_logits"][i, :3].argmax())]
                if kind == "span":
                    spans = best_spans(e.window, out["start_logits"][i], out["end_logits"][i], 1)
                    pred = spans[0][0] if spans else ""
                else:
                    pred = kind
                em += exact_match(pred, q.golden_answers)
                f1 += f1_score(pred, q.golden_answers)
                n_ans += 1
    model.train()
    return {
        "answer_em": round(100 * em / max(n_ans, 1), 2),
        "answer_f1": round(100 * f1 / max(n_ans, 1), 2),
        "sentence_acc": round(100 * sent_correct / max(sent_total, 1), 2),
        "n_answer": int(n_ans),
    }


class OwnParagraphs:
    """The paragraphs that questions from a HotpotQA-schema file bring with them, looked up like a corpus:
    their negatives come from their own ten paragraphs, as the shipped corpora's do."""

    def __init__(self, pairs: list[tuple[Question, list[Passage]]]) -> None:
        self.by_title: dict[str, Passage] = {}
        for _, passages in pairs:
            for p in passages:
                self.by_title.setdefault(p.id, p)
        self.passages = list(self.by_title.values())

    def __contains__(self, pid: object) -> bool:
        return pid in self.by_title

    def by_id(self, pid: str) -> Passage:
        return self.by_title[pid]


def training_sources(cfg: ReaderTrainingConfig, split: str) -> list[tuple[Any, list[Question]]]:
    """(corpus, questions) for `split`: the shipped corpora, plus the `--extra` files for `train`."""
    from reasonrag.training.verifier_pool import extra_questions

    sources: list[tuple[Any, list[Question]]] = []
    for name in cfg.corpora:
        corpus = Corpus.load(name)
        sources.append((corpus, corpus.questions(split)[: cfg.limit]))
    if split == "train":
        for path in cfg.extra:
            pairs = extra_questions(path, cfg.limit)
            questions = [
                replace(q, metadata={**q.metadata, "context_passages": [p.id for p in ps]}) for q, ps in pairs
            ]
            sources.append((OwnParagraphs(pairs), questions))
    return sources


def training_paragraphs(sources: list[tuple[Any, list[Question]]]) -> list[Passage]:
    """The context paragraphs of the training questions, each once: what cloze windows are made from."""
    seen: dict[str, Passage] = {}
    for corpus, questions in sources:
        for q in questions:
            for pid in q.metadata.get("context_passages") or []:
                if pid in corpus and pid not in seen:
                    seen[pid] = corpus.by_id(pid)
    return list(seen.values())


def _examples_for(
    sources: list[tuple[Any, list[Question]]], tokenizer, cfg: ReaderTrainingConfig, rng: random.Random
) -> tuple[list, dict]:
    examples: list[Example] = []
    owner: dict[int, Question] = {}
    for corpus, questions in sources:
        builder = ExampleBuilder(corpus, tokenizer, cfg.max_length, rng)
        for q in questions:
            for e in builder.build(q):
                examples.append(e)
                owner[id(e)] = q
    return examples, owner


def save_reader(model: ReaderModel, out_dir: Path, manifest: dict) -> None:
    """Write weights (float16 safetensors) and manifest atomically into `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".reader-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
    save_file({k: v.half() for k, v in trainable_state(model).items()}, str(tmp / "model.safetensors"))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, out_dir)


def dev_choice(metrics: dict) -> float:
    """What picks the saved epoch: the answer head and the evidence head count alike."""
    return (metrics["answer_f1"] + metrics["sentence_acc"]) / 2


def train_reader(cfg: ReaderTrainingConfig, out_dir: Path, work: Path | None = None) -> dict:
    """Train and save the best dev epoch into `out_dir`; with `work`, checkpoint every
    `cfg.checkpoint_every` batches and at each epoch's end, and resume from there on a rerun.

    Each epoch's windows (fresh negatives, orders, distractors) and batch order come from a generator
    seeded by the seed and the epoch, so a resumed epoch rebuilds the very batches it was cut off in.
    """
    from tqdm import tqdm

    from reasonrag.retrieval.encoder import resolve_encoder

    torch.manual_seed(cfg.seed)
    encoder_path = resolve_encoder(cfg.encoder)
    backbone, tokenizer, hidden = _backbone_from_encoder(encoder_path)
    model = ReaderModel(backbone, hidden)
    for p in model.backbone.parameters():
        p.requires_grad = False
    layers = model.backbone.encoder.layer
    for layer in layers[len(layers) - cfg.train_layers :]:
        for p in layer.parameters():
            p.requires_grad = True
    dev, dev_owner = _examples_for(training_sources(cfg, "dev"), tokenizer, cfg, random.Random(cfg.seed + 1))
    train_sources = training_sources(cfg, "train")

    paragraphs = training_paragraphs(train_sources) if cfg.cloze else []
    if cfg.init:
        from safetensors.torch import load_file

        init = load_file(str(Path(cfg.init) / "model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in init.items()}, strict=False)

    def epoch_batches(epoch: int) -> tuple[list[list[Example]], int]:
        from reasonrag.training.reader_cloze import cloze_examples

        rng = random.Random(f"{cfg.seed}|epoch {epoch}")
        train = [] if cfg.cloze_only else _examples_for(train_sources, tokenizer, cfg, rng)[0]
        train += cloze_examples(paragraphs, cfg.cloze, tokenizer, cfg.max_length, rng) if cfg.cloze else []
        return _batches(train, cfg.batch_size, rng), len(train)

    batches, n_train = epoch_batches(1)
    params = [p for p in model.parameters() if p.requires_grad]
    head_params = [
        p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")
    ]
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    optim = torch.optim.AdamW(
        [{"params": body_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.lr * cfg.head_lr_scale}],
        weight_decay=0.01,
    )
    steps = cfg.epochs * len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps)
    )
    print(f"reader: {n_train} train windows, {len(dev)} dev windows, {steps} steps", file=sys.stderr)
    position = {"epoch": 1, "batch": 0, "history": [], "best": -1.0, "seconds": 0.0}
    ckpt = None if work is None else Path(work) / f"checkpoint-{recipe_hash(cfg)}"
    if ckpt is not None and (ckpt / "position.json").is_file():
        position = load_checkpoint(ckpt, model, optim, sched)
        print(f"resuming at epoch {position['epoch']}, batch {position['batch']}", file=sys.stderr)
    started = time.time() - position["seconds"]
    model.train()
    for epoch in range(position["epoch"], cfg.epochs + 1):
        if epoch > 1:
            batches, n_train = epoch_batches(epoch)
        first = position["batch"] if epoch == position["epoch"] else 0
        bar = tqdm(range(first, len(batches)), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch")
        for b in bar:
            chunk = batches[b]
            out = model(**collate([e.window for e in chunk], tokenizer.pad_token_id))
            loss = _loss(out, chunk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if ckpt is not None and (b + 1) % cfg.checkpoint_every == 0 and b + 1 < len(batches):
                position.update(epoch=epoch, batch=b + 1, seconds=time.time() - started)
                save_checkpoint(ckpt, trainable_state(model), optim, sched, position)
        metrics = evaluate_reader(model, dev, dev_owner, tokenizer.pad_token_id)
        metrics["epoch"] = epoch
        position["history"].append(metrics)
        print(f"dev after epoch {epoch}: {metrics}", file=sys.stderr)
        manifest = _manifest(cfg, position["history"], n_train, started)
        if dev_choice(metrics) > position["best"]:
            position["best"] = dev_choice(metrics)
            save_reader(model, out_dir, manifest)
        else:  # the better epoch's weights stay; the manifest still records every epoch
            (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        position.update(epoch=epoch + 1, batch=0, seconds=time.time() - started)
        if ckpt is not None:
            save_checkpoint(ckpt, trainable_state(model), optim, sched, position)
    return json.loads((Path(out_dir) / "manifest.json").read_text())


_LATER_OPTIONS = ("cloze", "cloze_only", "init")


def recipe_hash(cfg: ReaderTrainingConfig) -> str:
    """Names a recipe's checkpoint: a changed recipe never resumes another's weights."""
    # Options left at "off" stay out, so that adding an option never orphans an older recipe's checkpoint.
    recipe = {
        k: v
        for k, v in asdict(cfg).items()
        if k != "checkpoint_every" and not (k in _LATER_OPTIONS and not v)
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _manifest(cfg: ReaderTrainingConfig, history: list, train_windows: int, started: float) -> dict:
    from reasonrag.retrieval.encoder import encoder_fingerprint

    return {
        "kind": "reasonrag-reader",
        "format": 1,
        "encoder": encoder_fingerprint(cfg.encoder),
        "config": asdict(cfg),
        "dev": history,
        "train_windows_per_epoch": train_windows,
        "train_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "command": "python -m reasonrag.training.reader_training " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    defaults = ReaderTrainingConfig()
    ap = argparse.ArgumentParser(
        prog="python -m reasonrag.training.reader_training",
        description="Train the embedded reader (evidence, answer span, answer kind) on the train split.",
    )
    ap.add_argument("--out", required=True, help="directory to write model.safetensors and manifest.json")
    ap.add_argument("--corpora", nargs="+", default=defaults.corpora, help="shipped corpora to train on")
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--head-lr-scale", type=float, default=defaults.head_lr_scale)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--max-length", type=int, default=defaults.max_length)
    ap.add_argument("--train-layers", type=int, default=defaults.train_layers)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--limit", type=int, default=None, help="questions per corpus (quick runs)")
    ap.add_argument("--encoder", default=None, help="sentence-transformers name or path of the base encoder")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="more training questions (HotpotQA official schema JSON)"
    )
    ap.add_argument(
        "--work",
        default="runs/reader",
        help="where checkpoints are kept so that a killed run resumes (default: runs/reader)",
    )
    ap.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, help="batches")
    ap.add_argument(
        "--cloze",
        type=int,
        default=0,
        help="self-supervised cloze windows per epoch, from training paragraphs",
    )
    ap.add_argument("--cloze-only", action="store_true", help="train on cloze windows alone (pretraining)")
    ap.add_argument("--init", default=None, help="start from this reader directory's weights")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be at least 1")
    for path in args.extra:
        if not Path(path).is_file():
            ap.error(f"--extra {path}: no such file")
    if args.cloze_only and args.cloze < 1:
        ap.error("--cloze-only needs --cloze N (windows per epoch)")
    if args.init and not (Path(args.init) / "model.safetensors").is_file():
        ap.error(f"--init {args.init}: no model.safetensors there")
    cfg = ReaderTrainingConfig(
        corpora=args.corpora,
        epochs=args.epochs,
        lr=args.lr,
        head_lr_scale=args.head_lr_scale,
        batch_size=args.batch_size,
        max_length=args.max_length,
        train_layers=args.train_layers,
        seed=args.seed,
        limit=args.limit,
        encoder=args.encoder,
        extra=list(args.extra),
        checkpoint_every=args.checkpoint_every,
        cloze=args.cloze,
        cloze_only=args.cloze_only,
        init=args.init,
    )
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    manifest = train_reader(cfg, Path(args.out), Path(args.work))
    print(json.dumps(manifest["dev"][-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

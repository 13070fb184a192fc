"""Train the verifier PRM (`CrossEncoderPRM`) on exact step labels of the training questions.

    python -m reasonrag.training.verifier_training --out runs/verifier --extra PATH/train_extra.json

No rollouts are needed: the real agent nodes run over each training question's own context paragraphs
(the ten of HotpotQA's distractor setting, a closed pool), and at every stage the policy's best candidate
actions are executed (`AgentSteps.expand`) and labeled by the question's gold: a retrieve step is right
when it brought in a gold paragraph, an extract step when it kept a gold supporting sentence, an answer
when it matches a gold answer (exact match). Each explored answer state gives one label per candidate
answer, and a state with the gold evidence handed over gives more, so the synthesize head learns to tell
a right answer from the wrong ones read off the same evidence. Dev questions, built the same way, choose
the epoch.
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
from reasonrag.data.types import STAGES, Passage, Question
from reasonrag.prm.cross_encoder import CrossEncoderPRM, CrossEncoderPRMConfig
from reasonrag.prm.evaluation import auroc, gold_step_labels

_KEEP = ("stage", "hop", "action", "prob", "observation")


@dataclass
class VerifierTrainingConfig:
    corpora: list[str] = field(default_factory=lambda: ["hotpotqa", "2wikimultihopqa"])
    extra: list[str] = field(default_factory=list)  # more training questions, HotpotQA's official schema
    epochs: int = 2
    lr: float = 4e-5
    head_lr: float = 1e-3
    batch_size: int = 16
    expand: int = 4  # candidates executed per stage
    answers: int = 6  # candidate answers labeled per answer state
    k: int = 5  # passages per search
    max_hops: int = 3
    seed: int = 0
    limit: int | None = None  # training questions per source, for quick runs
    dev_limit: int = 100  # dev questions per corpus


def _slim(step: dict) -> dict:
    return {k: step[k] for k in _KEEP if k in step}


def extra_questions(path: str | Path, limit: int | None = None) -> list[tuple[Question, list[Passage]]]:
    """Questions with their own paragraphs from a file in HotpotQA's official schema."""
    out = []
    for rec in json.loads(Path(path).read_text())[:limit]:
        passages = [
            Passage(t, t, "".join(sents).strip(), tuple(s.strip() for s in sents))
            for t, sents in rec["context"]
        ]
        meta = {
            "gold_passages": sorted({t for t, _ in rec["supporting_facts"]}),
            "supporting_facts": [[t, int(i)] for t, i in rec["supporting_facts"]],
            "type": rec.get("type"),
        }
        out.append((Question(rec["_id"], rec["question"], [rec["answer"]], "train", meta), passages))
    return out


def corpus_questions(name: str, split: str, limit: int | None) -> list[tuple[Question, list[Passage]]]:
    corpus = Corpus.load(name)
    out = []
    for q in corpus.questions(split)[:limit]:
        ids = q.metadata.get("context_passages") or q.metadata.get("gold_passages") or []
        passages = [corpus.by_id(pid) for pid in ids if pid in corpus]
        if passages:
            out.append((q, passages))
    return out


def _sentence(p: Passage, i: int, score: float) -> dict:
    return {"passage_id": p.id, "title": p.title, "sentence_index": i, "text": p.sentences[i], "score": score}


def _extract_step(kept: list[dict]) -> dict:
    return {
        "stage": "extract",
        "hop": 0,
        "action": " | ".join(k["text"] for k in kept),
        "prob": 1.0,
        "observation": kept,
    }


def _retrieve_step(query: str, hits: list[Any]) -> dict:
    obs = [
        {
            "id": h.passage.id,
            "title": h.passage.title,
            "score": round(float(h.score), 4),
            "text": " ".join(h.passage.sentences[:2])[:200],
        }
        for h in hits
    ]
    return {"stage": "retrieve", "hop": 0, "action": query, "prob": 1.0, "observation": obs}


def continue_examples(question: Question, extract_examples: list[dict]) -> list[dict]:
    """ "Answer now or hop again" as a labeled step: after each evidence set, another hop is right exactly
    when the evidence still lacks a gold supporting fact (the evidence does not suffice yet)."""
    facts = {(pid, int(i)) for pid, i in question.metadata.get("supporting_facts") or []}
    out = []
    for e in extract_examples:
        kept = {
            (o["passage_id"], int(o["sentence_index"]))
            for s in e["steps"]
            if s["stage"] == "extract"
            for o in s["observation"]
        }
        step = {
            "stage": "synthesize",
            "hop": 0,
            "action": "(another hop)",
            "prob": 1.0,
            "observation": "another hop",
        }
        out.append(
            {
                "question": question.question,
                "steps": e["steps"] + [step],
                "label": int(not facts <= kept),
                "stage": "synthesize",
                "kind": "continue",
            }
        )
    return out


def explore(
    question: Question,
    passages: Sequence[Passage],
    policy: Any,
    config: VerifierTrainingConfig,
    search: Any = None,
) -> list[dict]:
    """Labeled steps of one question: `{"question", "steps", "label", "stage"}` each.

    Evidence sets are drawn from the question's own paragraphs (gold supporting sentences, and
    sentences of the same passages that support nothing), and the policy proposes its answers to each,
    as it would at an answer step: one label per candidate answer. With `search` (the corpus retriever),
    the question and question-plus-evidence queries the policy makes are run and labeled too.
    """
    rng = random.Random(f"{config.seed}|{question.id}")
    by_id = {p.id: p for p in passages}
    facts = sorted(
        {
            (pid, int(i))
            for pid, i in question.metadata.get("supporting_facts") or []
            if pid in by_id and int(i) < len(by_id[pid].sentences)
        }
    )
    gold = [_sentence(by_id[pid], i, 0.9) for pid, i in facts]
    others = [
        _sentence(p, i, 0.3)
        for p in passages
        for i in range(min(len(p.sentences), 3))
        if (p.id, i) not in set(facts)
    ]
    rng.shuffle(others)
    if not gold:
        return []
    out: list[dict] = []

    def add(steps: list[dict], stage: str, label: int) -> None:
        out.append({"question": question.question, "steps": steps, "label": int(label), "stage": stage})

    first = gold[0]["passage_id"]
    one_passage = [g for g in gold if g["passage_id"] == first]
    evidence_sets = [gold, one_passage + others[:1], others[1:3], others[3:4] + gold[-1:]]
    labels = gold_step_labels
    for kept in evidence_sets:
        if not kept:
            continue
        step = _extract_step(kept)
        add([step], "extract", labels([step], question)[0])
    for kept in evidence_sets[:3]:
        if not kept:
            continue
        path = [_extract_step(kept)]
        state = {
            "question": question.question,
            "hop": config.max_hops - 1,
            "max_hops": config.max_hops,
            "evidence": [dict(k, hop=0) for k in kept],
            "retrieved": [],
        }
        answers = [c for c in policy.propose("synthesize", state) if c.action.get("type") != "continue"][
            : config.answers
        ]
        for c in answers:
            obs = c.action.get("answer") if c.action.get("type") == "answer" else "not enough evidence"
            step = {
                "stage": "synthesize",
                "hop": 0,
                "action": c.text,
                "prob": round(c.prob, 6),
                "observation": obs or "not enough evidence",
            }
            add(path + [step], "synthesize", labels([step], question)[0])
    out.extend(continue_examples(question, [e for e in out if e["stage"] == "extract"]))
    if search is not None:
        hits = search.search(question.question, k=config.k)
        step = _retrieve_step(question.question, hits)
        add([step], "retrieve", labels([step], question)[0])
        seen = {h.passage.id for h in hits}
        for kept in (one_passage, others[:1]):
            if kept:
                query = f"{question.question} {kept[0]['text']}"
                later = _retrieve_step(query, search.search(query, k=config.k, exclude=seen))
                add([_extract_step(kept), dict(later, hop=1)], "retrieve", labels([later], question)[0])
    return out


def build_examples(pairs: list[tuple], policy: Any, config: VerifierTrainingConfig, desc: str) -> list[dict]:
    """`pairs` are (question, its passages, the corpus search or None)."""
    from tqdm import tqdm

    out: list[dict] = []
    for q, passages, search in tqdm(pairs, desc=desc, unit="q", file=sys.stderr):
        out.extend(explore(q, passages, policy, config, search))
    return out


def evaluate_examples(prm: CrossEncoderPRM, examples: list[dict]) -> dict[str, float | None]:
    prm.eval()
    scores = []
    for i in range(0, len(examples), 64):
        scores.extend(prm.score_last(examples[i : i + 64]))
    return {
        stage: auroc(
            [s for s, e in zip(scores, examples) if e["stage"] == stage],
            [e["label"] for e in examples if e["stage"] == stage],
        )
        for stage in STAGES
    }


def train_verifier(
    prm: CrossEncoderPRM,
    train: list[dict],
    dev: list[dict],
    out: str | Path,
    config: VerifierTrainingConfig,
    manifest: dict | None = None,
) -> dict[str, Any]:
    """Step-level BCE over labeled candidate steps; the epoch with the best mean dev AUROC is saved."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    head = list(prm.model["head"].parameters())
    layers = [p for n, p in prm.model["backbone"].named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": layers, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=0.01
    )
    history, best = [], -1.0
    t0 = time.time()
    for epoch in range(1, config.epochs + 1):
        order = list(range(len(train)))
        rng.shuffle(order)
        prm.train()
        total = 0.0
        bar = tqdm(
            range(0, len(order), config.batch_size), desc=f"epoch {epoch}", unit="batch", file=sys.stderr
        )
        for b in bar:
            batch = [train[i] for i in order[b : b + config.batch_size]]
            logits = torch.cat(
                prm.step_logits([{"question": e["question"], "steps": e["steps"]} for e in batch])
            )
            # only the last step of each example is labeled
            lasts, pos = [], 0
            for e in batch:
                pos += len(e["steps"])
                lasts.append(pos - 1)
            target = torch.tensor([float(e["label"]) for e in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[lasts], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(batch)
            bar.set_postfix(loss=f"{float(loss):.3f}")
        dev_auc = evaluate_examples(prm, dev)
        mean = sum(v for v in dev_auc.values() if v is not None) / max(
            1, sum(v is not None for v in dev_auc.values())
        )
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(total / len(train), 4),
                "dev_auroc": dev_auc,
                "dev_mean_auroc": round(mean, 4),
            }
        )
        print(json.dumps(history[-1]), file=sys.stderr)
        if mean > best:
            best = mean
            prm.save(
                out,
                {
                    "training": asdict(config),
                    "history": history,
                    "train_examples": len(train),
                    **(manifest or {}),
                },
            )
    return {"out": str(out), "history": history, "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reasonrag.training.verifier_training",
        description="Train the verifier PRM (a cross-encoder) on exact step labels of the training questions.",
    )
    ap.add_argument("--out", required=True, help="directory of the trained verifier")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="more training questions (HotpotQA official schema JSON)"
    )
    ap.add_argument(
        "--examples", default=None, help="cache of the built examples (JSON): reused when it exists"
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="training questions per source")
    ap.add_argument("--dev-limit", type=int, default=100, help="dev questions per corpus")
    ap.add_argument("--train-layers", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=192, help="tokens per question-step pair")
    ap.add_argument(
        "--max-examples", type=int, default=None, help="train on a seeded sample of this many steps"
    )
    ap.add_argument(
        "--max-dev-examples", type=int, default=None, help="choose on a seeded sample of dev steps"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for path in args.extra:
        if not Path(path).is_file():
            ap.error(f"--extra {path}: no such file")
    from reasonrag.policies.embedded import EmbeddedPolicy

    config = VerifierTrainingConfig(
        extra=list(args.extra), epochs=args.epochs, limit=args.limit, dev_limit=args.dev_limit, seed=args.seed
    )
    torch.manual_seed(config.seed)
    cache = Path(args.examples) if args.examples else None
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
    else:
        policy = EmbeddedPolicy()
        from reasonrag.retrieval.retriever import DenseRetriever

        searches = {name: DenseRetriever(Corpus.load(name)) for name in config.corpora}
        train_pairs = [
            (q, p, searches[n]) for n in config.corpora for q, p in corpus_questions(n, "train", config.limit)
        ]
        for path in config.extra:
            train_pairs += [(q, p, None) for q, p in extra_questions(path, config.limit)]
        dev_pairs = [
            (q, p, searches[n])
            for n in config.corpora
            for q, p in corpus_questions(n, "dev", config.dev_limit)
        ]
        data = {
            "train": build_examples(train_pairs, policy, config, "train questions"),
            "dev": build_examples(dev_pairs, policy, config, "dev questions"),
        }
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(data))
    sample = random.Random(config.seed)
    for part, most in (("train", args.max_examples), ("dev", args.max_dev_examples)):
        if most is not None and len(data[part]) > most:
            data[part] = sample.sample(data[part], most)
    for part in ("train", "dev"):
        counts = {s: sum(1 for e in data[part] if e["stage"] == s) for s in STAGES}
        pos = {s: sum(e["label"] for e in data[part] if e["stage"] == s) for s in STAGES}
        print(f"{part}: {len(data[part])} labeled steps {counts}, positive {pos}", file=sys.stderr)
    prm = CrossEncoderPRM(CrossEncoderPRMConfig(train_layers=args.train_layers, max_length=args.max_length))
    command = "python -m reasonrag.training.verifier_training " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result = train_verifier(prm, data["train"], data["dev"], args.out, config, {"command": command})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How well the shipped reader answers when handed the gold evidence, and what span decoding changes.

    python benchmarks/reader_decoding.py --penalties 0 0.1 0.2 0.3 0.5 \\
        --out benchmarks/results/reader_decoding_dev.json

One answer window per `dev` span question (gold supporting sentences, shuffled, with up to two distractor
sentences: the windows the reader's own dev metric uses, seed 0), read once. Reports, per corpus, top-1 EM
and F1 for each span length penalty, and how often the gold answer is among the top k spans: the headroom
a better span choice could reach without a better reader.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["hotpotqa", "2wikimultihopqa"])
    ap.add_argument("--split", default="dev")
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--reader", default=None, help="reader directory (default: the shipped one)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from reasonrag.cli.options import quiet_libraries
    from reasonrag.data.corpus import Corpus
    from reasonrag.data.rewards import exact_match, f1_score
    from reasonrag.policies.reader import KINDS, best_spans, collate, load_reader
    from reasonrag.training.reader_training import ExampleBuilder

    quiet_libraries()
    model, tokenizer, _ = load_reader(args.reader)
    model.eval()
    out: dict = {"split": args.split, "penalties": args.penalties, "corpora": {}}
    for name in args.corpora:
        corpus = Corpus.load(name)
        builder = ExampleBuilder(corpus, tokenizer, 256, random.Random(0))
        rows = []
        for q in corpus.questions(args.split):
            example = next((e for e in builder.build(q) if e.kind in (0, 1, 2)), None)
            if example is not None and KINDS[example.kind] == "span":
                rows.append((q, example.window))
        logits = []
        with torch.inference_mode():
            for i in range(0, len(rows), 32):
                batch = collate([w for _, w in rows[i : i + 32]], tokenizer.pad_token_id)
                res = model(**batch)
                logits.extend(zip(res["start_logits"], res["end_logits"]))
        result: dict = {"n": len(rows), "by_penalty": {}}
        for penalty in args.penalties:
            em = f1 = 0.0
            top = {1: 0, 3: 0, 5: 0, 10: 0}
            for (q, w), (start, end) in zip(rows, logits):
                spans = best_spans(w, start, end, 10, length_penalty=penalty)
                pred = spans[0][0] if spans else ""
                em += exact_match(pred, q.golden_answers)
                f1 += f1_score(pred, q.golden_answers)
                for k in top:
                    top[k] += any(exact_match(t, q.golden_answers) for t, _ in spans[:k])
            n = max(len(rows), 1)
            result["by_penalty"][str(penalty)] = {
                "em": round(100 * em / n, 1),
                "f1": round(100 * f1 / n, 1),
                **{f"gold_in_top{k}": round(100 * v / n, 1) for k, v in top.items()},
            }
            print(name, penalty, result["by_penalty"][str(penalty)], file=sys.stderr, flush=True)
        out["corpora"][name] = result
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

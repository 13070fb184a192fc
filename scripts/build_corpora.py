#!/usr/bin/env python
"""Build the shipped corpora (corpora/hotpotqa, corpora/2wikimultihopqa, corpora/musique) from raw data.

For each dataset this writes passages.jsonl (FlashRAG format plus sentences), questions.jsonl (gold
evidence as passage ids and sentence indices, the fixed split), NOTICE and, where the dataset's license
asks for it, LICENSE. Every file is written to a temporary file and moved into place, so an interrupted
run never leaves a half-written corpus. Any inconsistency in the split file fails the build; supporting
facts that do not resolve are counted, printed and dropped (only those facts).

Run from anywhere:  python scripts/build_corpora.py [--data DIR] [--out DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout, without installing
    sys.path.insert(0, str(REPO_ROOT))

from reasonrag.data.corpus import load_passages, load_questions, split_sentences  # noqa: E402

DATASETS = ("hotpotqa", "2wikimultihopqa", "musique")
SPLITS = ("train", "dev", "test")
# provenance.json keys are "<prefix>:<question id>".
PROVENANCE_PREFIX = {"hotpotqa": "hotpotqa", "2wikimultihopqa": "2wiki", "musique": "musique"}


class BuildError(Exception):
    """The raw data is inconsistent in a way that must not be papered over."""


@dataclass
class Stats:
    """What one build did, for the summary and for spotting surprises in the data."""

    passages: int = 0
    questions: dict[str, int] = field(default_factory=dict)
    gold_passages: int = 0
    supporting_facts: int = 0
    dropped_gold_passages: int = 0
    dropped_facts: int = 0
    trailing_blank_sentences: int = 0
    interior_blank_sentences: int = 0
    ambiguous_titles: int = 0
    decomposition_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.problems.append(message)


@dataclass
class Built:
    passages: list[dict[str, Any]]
    questions: list[dict[str, Any]]
    stats: Stats


# --------------------------------------------------------------------------------------------------------
# Reading raw data
# --------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise BuildError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: invalid JSON ({exc})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise BuildError(f"{path}:{lineno}: invalid JSON ({exc})") from None
    except FileNotFoundError:
        raise BuildError(f"{path}: missing") from None
    return rows


def dedupe(items: Iterable[Any]) -> list[Any]:
    """Drop repeats, keep first-seen order (gold ids, answers)."""
    seen: set[Any] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def check_unique_ids(rows: list[dict[str, Any]], what: str, key: str) -> None:
    counts = Counter(row[key] for row in rows)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise BuildError(f"{what}: {len(repeated)} repeated ids, e.g. {repeated[:3]}")
    bad = [row[key] for row in rows if not isinstance(row[key], str) or not row[key]]
    if bad:
        raise BuildError(f"{what}: ids must be non-empty strings, e.g. {bad[:3]}")


def assign_splits(dataset: str, question_ids: list[str], splits: dict[str, Any]) -> dict[str, str]:
    """Map every question id to its split; any id in no split, two splits or no question is fatal."""
    if dataset not in splits:
        raise BuildError(f"splits.json has no entry for {dataset!r}")
    table = splits[dataset]
    unknown = set(table) - set(SPLITS)
    if unknown:
        raise BuildError(f"splits.json[{dataset!r}] has unknown splits {sorted(unknown)}")
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for qid in table.get(split, []):
            if qid in split_of:
                raise BuildError(f"{dataset}: question {qid} is in both {split_of[qid]!r} and {split!r}")
            split_of[qid] = split
    ids = set(question_ids)
    missing = [qid for qid in question_ids if qid not in split_of]
    if missing:
        raise BuildError(f"{dataset}: {len(missing)} questions are in no split, e.g. {missing[:3]}")
    extra = [qid for qid in split_of if qid not in ids]
    if extra:
        raise BuildError(f"{dataset}: splits.json names {len(extra)} unknown questions, e.g. {extra[:3]}")
    return split_of


# --------------------------------------------------------------------------------------------------------
# Passages
# --------------------------------------------------------------------------------------------------------


def passage_record(pid: str, title: str, sentences: list[str]) -> dict[str, Any]:
    return {"id": pid, "contents": f"{title}\n{' '.join(sentences)}", "sentences": sentences}


def clean_sentences(raw: list[str], stats: Stats) -> list[str]:
    """Strip each sentence; drop blank ones only at the end, where no sentence index can move."""
    sentences = [s.strip() for s in raw]
    while sentences and not sentences[-1]:
        sentences.pop()
        stats.trailing_blank_sentences += 1
    stats.interior_blank_sentences += sum(1 for s in sentences if not s)
    return sentences


def sentence_passages(
    rows: list[dict[str, Any]], stats: Stats
) -> tuple[list[dict[str, Any]], dict[tuple[str, tuple[str, ...]], str]]:
    """HotpotQA / 2Wiki corpora: `{id, title, sentences}`; key is (title, raw sentences) -> id."""
    records = []
    key_to_id: dict[tuple[str, tuple[str, ...]], str] = {}
    for row in rows:
        sentences = clean_sentences(row["sentences"], stats)
        if not sentences:
            raise BuildError(f"passage {row['id']!r} has no text")
        records.append(passage_record(row["id"], row["title"].strip(), sentences))
        key = (row["title"], tuple(row["sentences"]))
        if key in key_to_id:
            raise BuildError(f"passages {key_to_id[key]!r} and {row['id']!r} are identical")
        key_to_id[key] = row["id"]
    return records, key_to_id


# --------------------------------------------------------------------------------------------------------
# Questions with sentence-level evidence (HotpotQA, 2WikiMultihopQA)
# --------------------------------------------------------------------------------------------------------


def sentence_level_questions(
    dataset: str,
    raw_questions: list[dict[str, Any]],
    key_to_id: dict[tuple[str, tuple[str, ...]], str],
    sentences_of: dict[str, list[str]],
    split_of: dict[str, str],
    stats: Stats,
) -> list[dict[str, Any]]:
    """Resolve each [title, sentence index] against the question's own context paragraphs.

    Titles are resolved inside the question's context, never globally: two different paragraphs can
    share a title across questions (the corpus gives the second one an id like "Title#2").
    """
    out = []
    for q in raw_questions:
        qid = q["_id"]
        ids_by_title: dict[str, list[str]] = {}
        for title, sentences in q["context"]:
            pid = key_to_id.get((title, tuple(sentences)))
            if pid is None:
                stats.problem(f"{qid}: context paragraph {title!r} is not in the corpus")
                continue
            ids = ids_by_title.setdefault(title, [])
            if pid not in ids:
                ids.append(pid)
        stats.ambiguous_titles += sum(1 for ids in ids_by_title.values() if len(ids) > 1)

        gold: list[str] = []
        facts: list[list[Any]] = []
        for title, index in q["supporting_facts"]:
            candidates = ids_by_title.get(title, [])
            if not candidates:
                stats.dropped_gold_passages += 1
                stats.dropped_facts += 1
                stats.problem(f"{qid}: supporting title {title!r} is not among its context paragraphs")
                continue
            valid = [
                pid
                for pid in candidates
                if isinstance(index, int) and 0 <= index < len(sentences_of[pid]) and sentences_of[pid][index]
            ]
            gold.append(valid[0] if valid else candidates[0])
            if not valid:
                stats.dropped_facts += 1
                stats.problem(f"{qid}: sentence {index!r} of {title!r} does not exist")
                continue
            facts.append([valid[0], index])
        gold = dedupe(gold)
        stats.gold_passages += len(gold)
        stats.supporting_facts += len(facts)

        metadata: dict[str, Any] = {"type": q["type"]}
        if "level" in q:
            metadata["level"] = q["level"]
        metadata["gold_passages"] = gold
        metadata["supporting_facts"] = facts
        # The question's own context paragraphs (gold and distractors): the distractor setting, and the
        # hard negatives the reader trains on.
        metadata["context_passages"] = dedupe(pid for ids in ids_by_title.values() for pid in ids)
        if "evidences" in q:  # 2Wiki's (subject, relation, object) triples
            metadata["evidences"] = q["evidences"]
        out.append(question_record(qid, q["question"], [q["answer"]], split_of[qid], metadata))
    return out


def question_record(
    qid: str, question: str, answers: list[str], split: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    if not isinstance(question, str) or not question.strip():
        raise BuildError(f"question {qid}: empty question text")
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise BuildError(f"question {qid}: answers must be non-empty strings, got {answers!r}")
    return {
        "id": qid,
        "question": question.strip(),
        "golden_answers": dedupe(answers),
        "split": split,
        "metadata": metadata,
    }


def build_sentence_dataset(dataset: str, raw_file: str, data_dir: Path, splits: dict[str, Any]) -> Built:
    stats = Stats()
    rows = read_jsonl(data_dir / dataset / "corpus.jsonl")
    check_unique_ids(rows, f"{dataset}/corpus.jsonl", "id")
    passages, key_to_id = sentence_passages(rows, stats)
    sentences_of = {p["id"]: p["sentences"] for p in passages}
    raw_questions = read_json(data_dir / dataset / raw_file)
    check_unique_ids(raw_questions, f"{dataset}/{raw_file}", "_id")
    split_of = assign_splits(dataset, [q["_id"] for q in raw_questions], splits)
    questions = sentence_level_questions(dataset, raw_questions, key_to_id, sentences_of, split_of, stats)
    return Built(passages, questions, stats)


# --------------------------------------------------------------------------------------------------------
# MuSiQue: paragraph-level evidence and a question decomposition
# --------------------------------------------------------------------------------------------------------


def build_musique(data_dir: Path, splits: dict[str, Any]) -> Built:
    stats = Stats()
    rows = read_jsonl(data_dir / "musique" / "corpus.jsonl")
    check_unique_ids(rows, "musique/corpus.jsonl", "id")
    passages = []
    key_to_id: dict[tuple[str, str], str] = {}
    for row in rows:
        sentences = split_sentences(row["text"])
        if not sentences:
            raise BuildError(f"musique passage {row['id']!r} has no text")
        passages.append(passage_record(row["id"], row["title"].strip(), sentences))
        key = (row["title"], row["text"])
        if key in key_to_id:
            raise BuildError(f"musique passages {key_to_id[key]!r} and {row['id']!r} are identical")
        key_to_id[key] = row["id"]

    raw_questions = read_jsonl(data_dir / "musique" / "dev.jsonl")
    check_unique_ids(raw_questions, "musique/dev.jsonl", "id")
    split_of = assign_splits("musique", [q["id"] for q in raw_questions], splits)
    questions = []
    for q in raw_questions:
        qid = q["id"]
        # Match by (title, text): titles alone are ambiguous (one article gives several paragraphs).
        pid_of_idx: dict[int, str | None] = {}
        supporting: list[str] = []
        for paragraph in q["paragraphs"]:
            pid = key_to_id.get((paragraph["title"], paragraph["paragraph_text"]))
            pid_of_idx[paragraph["idx"]] = pid
            if paragraph["is_supporting"]:
                if pid is None:
                    stats.dropped_gold_passages += 1
                    stats.problem(f"{qid}: supporting paragraph {paragraph['idx']} is not in the corpus")
                else:
                    supporting.append(pid)
        decomposition = []
        hop_order: list[str] = []
        for step in q["question_decomposition"]:
            pid = pid_of_idx.get(step.get("paragraph_support_idx"))
            decomposition.append({**step, "passage_id": pid})
            if pid is not None:
                hop_order.append(pid)
        if set(hop_order) != set(supporting):
            stats.decomposition_mismatches += 1
            stats.problem(f"{qid}: decomposition paragraphs differ from is_supporting paragraphs")
        # Gold passages in hop order (the order a multi-hop agent should find them), then any others.
        gold = dedupe([pid for pid in hop_order if pid in supporting] + supporting)
        stats.gold_passages += len(gold)
        metadata = {
            "type": qid.split("__", 1)[0],  # "2hop", "3hop1", ... : MuSiQue's composition shape
            "hops": len(q["question_decomposition"]),
            "gold_passages": gold,
            "context_passages": dedupe(pid for pid in pid_of_idx.values() if pid is not None),
            "question_decomposition": decomposition,
        }
        answers = [q["answer"], *q.get("answer_aliases", [])]
        questions.append(question_record(qid, q["question"], answers, split_of[qid], metadata))
    stats.passages = len(passages)
    return Built(passages, questions, stats)


# --------------------------------------------------------------------------------------------------------
# NOTICE
# --------------------------------------------------------------------------------------------------------

CLOSED_POOL = """\
Retrieval difficulty: this corpus is a closed pool made of the questions' own context paragraphs
(gold paragraphs plus the dataset's distractors), not all of Wikipedia. Retrieval is therefore much
easier than in open-domain settings; do not compare retrieval or QA numbers with open-Wikipedia results
without saying so."""

WIKIPEDIA = """\
Wikipedia: the passages are text from Wikipedia, written by Wikipedia contributors and licensed under
the Creative Commons Attribution-ShareAlike license (CC BY-SA); see
https://en.wikipedia.org/wiki/Wikipedia:Copyrights."""

COMMON_CHANGES = """\
- Selection: the questions are a de-duplicated union of public subsets of the official dev set (the
  sources above), not the whole dev set; the passages are the union of their context paragraphs.
- Split assignment: the official dev questions were re-split into train / dev / test by reasonrag's
  fixed split file ("split" field of questions.jsonl). These splits are not the dataset's own.
- Format conversion: passages to FlashRAG-compatible JSONL {"id", "contents": "TITLE\\nTEXT",
  "sentences"}, with each sentence stripped of surrounding whitespace and TEXT the sentences joined by
  one space; questions to {"id", "question", "golden_answers", "split", "metadata"}.
- Passage ids are the paragraph titles; a different paragraph with an already used title gets "#2",
  "#3", ... appended."""

DATASET_NOTES: dict[str, dict[str, str]] = {
    "hotpotqa": {
        "title": "HotpotQA (distractor setting, dev set)",
        "citation": (
            "Zhilin Yang, Peng Qi, Saizheng Zhang, Yoshua Bengio, William W. Cohen, Ruslan Salakhutdinov and\n"
            "Christopher D. Manning. HotpotQA: A Dataset for Diverse, Explainable Multi-hop Question\n"
            "Answering. EMNLP 2018. https://hotpotqa.github.io/"
        ),
        "license": (
            "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/legalcode).\n"
            'The HotpotQA README says: "The HotpotQA dataset is distributed under the CC BY-SA 4.0\n'
            'license." This corpus is derived from HotpotQA and is therefore itself distributed under\n'
            "CC BY-SA 4.0: anything you derive from it must carry the same license."
        ),
        "changes": (
            "- Supporting facts [title, sentence index] became [passage id, sentence index]; sentence\n"
            "  order is unchanged, so the indices are those of the original data. Blank sentences at the\n"
            "  end of a paragraph were dropped (this moves no index).\n"
            "- metadata holds type, level, gold_passages and supporting_facts."
        ),
    },
    "2wikimultihopqa": {
        "title": "2WikiMultihopQA (dev set)",
        "citation": (
            "Xanh Ho, Anh-Khoa Duong Nguyen, Saku Sugawara and Akiko Aizawa. Constructing A Multi-hop QA\n"
            "Dataset for Comprehensive Evaluation of Reasoning Steps. COLING 2020.\n"
            "https://github.com/Alab-NII/2wikimultihop"
        ),
        "license": (
            "License: Apache License 2.0, Copyright 2020 Xanh Ho. The full license text is in the file\n"
            "LICENSE next to this NOTICE. The Wikipedia text inside remains CC BY-SA (see below)."
        ),
        "changes": (
            "- Supporting facts [title, sentence index] became [passage id, sentence index]; sentence\n"
            "  order is unchanged, so the indices are those of the original data.\n"
            "- metadata holds type, gold_passages, supporting_facts and the original evidence triples."
        ),
    },
    "musique": {
        "title": "MuSiQue-Ans (dev set)",
        "citation": (
            "Harsh Trivedi, Niranjan Balasubramanian, Tushar Khot and Ashish Sabharwal. MuSiQue: Multihop\n"
            "Questions via Single-hop Question Composition. TACL 2022.\n"
            "https://github.com/StonyBrookNLP/musique"
        ),
        "license": (
            "License: Creative Commons Attribution 4.0 International (CC BY 4.0); the full license text is\n"
            "in the file LICENSE next to this NOTICE. Attribution: MuSiQue by Trivedi et al. (above),\n"
            "modified as described below. The Wikipedia text inside remains CC BY-SA (see below)."
        ),
        "changes": (
            "- Paragraph texts were split into sentences by reasonrag's rule-based splitter\n"
            "  (reasonrag.corpus.split_sentences) and re-joined with single spaces.\n"
            "- Gold evidence is paragraph-level: metadata.gold_passages lists the supporting paragraphs\n"
            "  (matched to passages by title and text) in hop order; question_decomposition is the\n"
            "  original one with a passage_id added to each step; type is the id prefix (2hop, 3hop1, ...).\n"
            "- golden_answers is the answer followed by its aliases, duplicates removed.\n"
            "- All questions are in the test split: MuSiQue is for out-of-domain evaluation only."
        ),
    },
}


def notice_text(dataset: str, built: Built, provenance: dict[str, list[str]]) -> str:
    notes = DATASET_NOTES[dataset]
    prefix = PROVENANCE_PREFIX[dataset] + ":"
    sources = Counter(src for key, files in provenance.items() if key.startswith(prefix) for src in files)
    source_lines = "\n".join(f"  - {src} ({n} questions)" for src, n in sorted(sources.items()))
    counts = ", ".join(f"{s} {built.stats.questions.get(s, 0)}" for s in SPLITS)
    license_file = "\n- LICENSE: the dataset's license text" if dataset in LICENSE_FILES else ""
    return f"""\
{notes["title"]}, converted for reasonrag
{"=" * 72}

Contents
- passages.jsonl: {len(built.passages)} passages
- questions.jsonl: {len(built.questions)} questions ({counts}){license_file}

Source
{notes["citation"]}

The raw records were taken unchanged from these public releases of subsets of the official dev set
(file names as recorded in reasonrag's provenance table; a question may appear in several):
{source_lines}

{notes["license"]}

{WIKIPEDIA}

What was changed
{COMMON_CHANGES}
{notes["changes"]}

{CLOSED_POOL}
"""


LICENSE_FILES = {
    "2wikimultihopqa": "2wikimultihopqa_LICENSE_Apache-2.0.txt",
    "musique": "musique_LICENSE_CC-BY-4.0.txt",
}


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


def write_atomic(path: Path, data: str) -> None:
    """Write to a temporary file in the same directory, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a corpus is meant to be readable
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def verify_round_trip(out_dir: Path, built: Built) -> None:
    """Load what was written with reasonrag's own loaders: the files must mean what we built."""
    passages = load_passages(out_dir / "passages.jsonl")
    for record, passage in zip(built.passages, passages, strict=True):
        title, _, text = record["contents"].partition("\n")
        if (passage.id, passage.title, passage.text, list(passage.sentences)) != (
            record["id"],
            title,
            text,
            record["sentences"],
        ):
            raise BuildError(f"{out_dir}: passage {record['id']!r} does not load back as written")
    questions = load_questions(out_dir / "questions.jsonl")
    if [q.id for q in questions] != [r["id"] for r in built.questions]:
        raise BuildError(f"{out_dir}: questions do not load back as written")


def write_corpus(dataset: str, built: Built, out_root: Path, data_dir: Path, provenance: dict) -> None:
    out_dir = out_root / dataset
    built.stats.passages = len(built.passages)
    built.stats.questions = dict(Counter(q["split"] for q in built.questions))
    write_atomic(out_dir / "passages.jsonl", jsonl(built.passages))
    write_atomic(out_dir / "questions.jsonl", jsonl(built.questions))
    write_atomic(out_dir / "NOTICE", notice_text(dataset, built, provenance))
    if dataset in LICENSE_FILES:
        license_text = (data_dir / "licenses" / LICENSE_FILES[dataset]).read_text(encoding="utf-8")
        write_atomic(out_dir / "LICENSE", license_text)
    verify_round_trip(out_dir, built)


def build(dataset: str, data_dir: Path, splits: dict[str, Any]) -> Built:
    if dataset == "hotpotqa":
        return build_sentence_dataset(dataset, "dev_distractor.json", data_dir, splits)
    if dataset == "2wikimultihopqa":
        return build_sentence_dataset(dataset, "dev.json", data_dir, splits)
    return build_musique(data_dir, splits)


def print_summary(dataset: str, stats: Stats, out_dir: Path, show: int) -> None:
    sentence_level = dataset != "musique"
    per_split = ", ".join(f"{s} {stats.questions.get(s, 0)}" for s in SPLITS)
    print(f"{dataset}: {stats.passages} passages; questions: {per_split}")
    if sentence_level:
        print(
            f"  gold passages {stats.gold_passages}, supporting facts {stats.supporting_facts}; "
            f"dropped: {stats.dropped_gold_passages} gold passages, {stats.dropped_facts} supporting facts"
        )
    else:
        print(
            f"  gold passages {stats.gold_passages} (paragraph-level evidence); "
            f"dropped: {stats.dropped_gold_passages} gold passages"
        )
    notes = []
    if stats.trailing_blank_sentences:
        notes.append(f"{stats.trailing_blank_sentences} trailing blank sentences dropped")
    if stats.interior_blank_sentences:
        notes.append(f"{stats.interior_blank_sentences} blank sentences kept to preserve indices")
    if stats.ambiguous_titles:
        notes.append(f"{stats.ambiguous_titles} context titles with two different paragraphs")
    if stats.decomposition_mismatches:
        notes.append(f"{stats.decomposition_mismatches} decompositions disagree with is_supporting")
    if notes:
        print("  notes: " + "; ".join(notes))
    for problem in stats.problems[:show]:
        print(f"  ! {problem}")
    if len(stats.problems) > show:
        print(f"  ! ... and {len(stats.problems) - show} more")
    print(f"  -> {out_dir}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build reasonrag's shipped corpora (passages, questions, NOTICE) from the raw data.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="raw data directory (default: ../shared/data relative to the repository root)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "corpora", help="output directory (default: corpora/)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=DATASETS, default=list(DATASETS), help="build only these datasets"
    )
    parser.add_argument(
        "--show-problems", type=int, default=20, metavar="N", help="print at most N unresolved items each"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir: Path = args.data
    if not data_dir.is_dir():
        print(f"error: raw data directory {data_dir} does not exist (use --data)", file=sys.stderr)
        return 2
    try:
        splits = read_json(data_dir / "splits.json")
        provenance = read_json(data_dir / "provenance.json")
        for dataset in args.only:
            built = build(dataset, data_dir, splits)
            write_corpus(dataset, built, args.out, data_dir, provenance)
            print_summary(dataset, built.stats, args.out / dataset, args.show_problems)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

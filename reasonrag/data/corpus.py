"""Loading corpora and questions: the public contract every other module reads data through.

A corpus is FlashRAG-compatible JSONL (`{"id", "contents": "title\\ntext"}`), optionally with `title`,
`text` and `sentences`; questions are JSONL `{"id", "question", "golden_answers", "split", "metadata"}`.
Bad input is a `CorpusError` / `QuestionsError` that names the file and line, so a user can fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reasonrag.data.files import parse_json
from reasonrag.data.types import Passage, Question
from reasonrag.errors import CorpusError, QuestionsError, ReasonRAGError, UnknownCorpusError

__all__ = [
    "Corpus",
    "CorpusSource",
    "corpora_dirs",
    "known_corpora",
    "load_passages",
    "load_questions",
    "resolve_corpus",
    "split_sentences",
]

PASSAGES_FILE = "passages.jsonl"
QUESTIONS_FILE = "questions.jsonl"
CORPORA_ENV = "REASONRAG_CORPORA"

# --------------------------------------------------------------------------------------------------------
# Sentence splitting
# --------------------------------------------------------------------------------------------------------

# Words that end in a period without ending a sentence (compared lower-cased, without the period).
# "etc." and company suffixes (Inc., Ltd.) are left out on purpose: they end sentences more often than not.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof st mt ft jr sr rev hon gen col lt capt cmdr sgt maj adm gov sen rep pres supt insp
    fr br messrs mme mlle vs al approx ca cf ed eds esp
    """.split()
)
# Abbreviations that are also ordinary words ("no", "art"): not a boundary only when a number follows.
_NUMBER_ABBREVIATIONS = frozenset(
    """
    no nos nr vol vols pp p fig figs art ch sec op
    jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()
)
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_OPENERS = "\"'“‘([¡¿"


def _starts_sentence(text: str, pos: int) -> bool:
    """True if the text at `pos` looks like the start of a sentence (capital or digit, after openers)."""
    n = len(text)
    while pos < n and text[pos] in _OPENERS:
        pos += 1
    return pos < n and (text[pos].isupper() or text[pos].isdigit())


def _is_abbreviation(text: str, period_pos: int, next_pos: int) -> bool:
    """True if the period at `period_pos` ends an abbreviation, an initial or a dotted acronym."""
    start = period_pos
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:period_pos].lstrip(_OPENERS)
    if not word:
        return False
    if len(word) == 1 and word.isalpha():  # initials: "J. R. R. Tolkien", "George W. Bush"
        return True
    if "." in word:  # dotted acronyms: "U.S.", "e.g.", "Ph.D."
        return True
    word = word.lower()
    if word in _ABBREVIATIONS:
        return True
    return word in _NUMBER_ABBREVIATIONS and next_pos < len(text) and text[next_pos].isdigit()


def _split_block(block: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(block):
        end = match.end()
        if not _starts_sentence(block, end):
            continue
        punct = match.group(0)
        if (
            punct[0] == "."
            and len(punct.rstrip().rstrip("\"'”’)]")) == 1
            and _is_abbreviation(block, match.start(), end)
        ):
            continue
        sentence = block[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = end
    tail = block[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a small deterministic rule set (no model, no download).

    A sentence ends at `.`, `!` or `?` (plus closing quotes/brackets) followed by whitespace and a capital
    letter or digit, and at blank lines. A period does not end a sentence after a known abbreviation
    ("Mr.", "Dr.", "St.", "No."), a single-letter initial ("J. R. R.") or a dotted acronym ("U.S."), so
    "The U.S. Army" stays whole (and, as a trade-off, so does "...in the U.S. He"). Decimals never split
    because no whitespace follows their point. Returns stripped sentences; at least one for any text that
    is not blank, and `[]` for blank text.
    """
    sentences: list[str] = []
    for block in _PARAGRAPH_BREAK.split(text):
        sentences.extend(_split_block(block))
    return sentences


# --------------------------------------------------------------------------------------------------------
# JSONL reading
# --------------------------------------------------------------------------------------------------------


def _iter_json_objects(path: Path, error: type[ReasonRAGError]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed input raises `error`.

    Lines are decoded one by one (not through a buffered text reader) so a bad byte is reported on the
    line it is on.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a JSONL file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start + 1} of the line)") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless: skip it
            if not line.strip():
                continue
            try:
                obj = parse_json(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _read_id(obj: dict[str, Any], where: str, error: type[ReasonRAGError]) -> str:
    """Ids may be int in the file (common in FlashRAG corpora); everything downstream uses str."""
    if "id" not in obj:
        raise error(f"{where}: missing field 'id'")
    raw = obj["id"]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise error(f"{where}: field 'id' must be a string or an integer, got {type(raw).__name__}")
    pid = str(raw)
    if not pid.strip():
        raise error(f"{where}: field 'id' is empty")
    return pid


def _optional_str(obj: dict[str, Any], key: str, where: str, error: type[ReasonRAGError]) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise error(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _title_from_first_line(line: str) -> str:
    """FlashRAG's wiki dumps quote the title line (`"Title"`): drop one pair of surrounding quotes."""
    line = line.strip()
    if len(line) >= 2 and line[0] == '"' and line[-1] == '"':
        line = line[1:-1].strip()
    return line


def _passage_from_object(obj: dict[str, Any], where: str) -> Passage:
    pid = _read_id(obj, where, CorpusError)
    contents = _optional_str(obj, "contents", where, CorpusError)
    title = _optional_str(obj, "title", where, CorpusError)
    text = _optional_str(obj, "text", where, CorpusError)
    raw_sentences = obj.get("sentences")
    sentences: tuple[str, ...] | None = None
    if raw_sentences is not None:
        if not isinstance(raw_sentences, list) or not all(isinstance(s, str) for s in raw_sentences):
            raise CorpusError(f"{where}: field 'sentences' must be a list of strings")
        if raw_sentences:
            sentences = tuple(raw_sentences)

    if contents is None and text is None and sentences is None:
        raise CorpusError(f"{where}: passage {pid!r} has none of 'contents', 'text' or 'sentences'")
    if contents is not None and not contents.strip():
        raise CorpusError(f"{where}: passage {pid!r} has empty 'contents'")

    contents_title = ""
    contents_text = ""
    if contents is not None:
        first, newline, rest = contents.partition("\n")
        if newline:
            contents_title, contents_text = _title_from_first_line(first), rest
        else:  # one line only: treat it as text, not as a title with nothing under it
            contents_text = contents

    if title is None:
        title = contents_title
    if text is None:
        text = contents_text if contents is not None else " ".join(sentences or ())
    title, text = title.strip(), text.strip()
    if not title and not text:
        raise CorpusError(f"{where}: passage {pid!r} has empty contents")
    if sentences is None:
        sentences = tuple(split_sentences(text)) or (title,)
    return Passage(id=pid, title=title, text=text, sentences=sentences)


def load_passages(path: str | os.PathLike[str]) -> list[Passage]:
    """Read a FlashRAG-compatible passages JSONL file, in file order.

    Per line: `id` (str or int), and `contents` ("title\\ntext") and/or `title`, `text`, `sentences`.
    title = `title`, else the first line of `contents` (surrounding quotes stripped); text = `text`, else
    the rest of `contents`, else the joined `sentences`; sentences = `sentences`, else `split_sentences`.
    Blank lines are skipped. Raises CorpusError naming file and line for anything malformed.
    """
    path = Path(path)
    passages: list[Passage] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _iter_json_objects(path, CorpusError):
        where = f"{path}:{lineno}"
        passage = _passage_from_object(obj, where)
        if passage.id in first_line:
            raise CorpusError(
                f"{where}: duplicate passage id {passage.id!r} (first on line {first_line[passage.id]})"
            )
        first_line[passage.id] = lineno
        passages.append(passage)
    if not passages:
        raise CorpusError(f"{path}: no passages (the file is empty)")
    return passages


def _golden_answers(obj: dict[str, Any], where: str) -> list[str]:
    for key in ("golden_answers", "answers", "answer"):
        if key in obj:
            value = obj[key]
            if key == "answer" and isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                kind = "a string or a list of strings" if key == "answer" else "a list of strings"
                raise QuestionsError(f"{where}: field '{key}' must be {kind}")
            return list(value)
    return []


def load_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Read a questions JSONL file, in file order.

    Per line: `id`, `question`, `golden_answers` (or `answers` list / `answer` string), optional `split`
    and `metadata` (where gold evidence lives). Raises QuestionsError naming file and line.
    """
    path = Path(path)
    questions: list[Question] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _iter_json_objects(path, QuestionsError):
        where = f"{path}:{lineno}"
        qid = _read_id(obj, where, QuestionsError)
        if qid in first_line:
            raise QuestionsError(f"{where}: duplicate question id {qid!r} (first on line {first_line[qid]})")
        text = _optional_str(obj, "question", where, QuestionsError)
        if text is None or not text.strip():
            raise QuestionsError(f"{where}: question {qid!r} has a missing or empty 'question'")
        split = _optional_str(obj, "split", where, QuestionsError)
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise QuestionsError(
                f"{where}: field 'metadata' must be an object, got {type(metadata).__name__}"
            )
        first_line[qid] = lineno
        questions.append(
            Question(
                id=qid,
                question=text.strip(),
                golden_answers=_golden_answers(obj, where),
                split=split,
                metadata=metadata,
            )
        )
    if not questions:
        raise QuestionsError(f"{path}: no questions (the file is empty)")
    return questions


# --------------------------------------------------------------------------------------------------------
# Finding corpora
# --------------------------------------------------------------------------------------------------------


def corpora_dirs() -> list[Path]:
    """Directories that hold shipped corpora, highest priority first; only those that exist.

    `$REASONRAG_CORPORA` (os.pathsep-separated) lets a user add or override corpora; `_corpora` inside the
    package is where the wheel puts them; `corpora/` next to the package serves editable installs.
    """
    candidates: list[Path] = []
    env = os.environ.get(CORPORA_ENV, "")
    candidates.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    package_dir = Path(__file__).resolve().parents[1]
    candidates.append(package_dir / "_corpora")
    candidates.append(package_dir.parent / "corpora")
    dirs: list[Path] = []
    seen: set[Path] = set()
    for candidate in candidates:
        if candidate.is_dir():
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                dirs.append(candidate)
    return dirs


def known_corpora() -> list[str]:
    """Names of the shipped corpora: subdirectories of `corpora_dirs()` holding a passages.jsonl."""
    names: set[str] = set()
    for directory in corpora_dirs():
        for child in directory.iterdir():
            if (child / PASSAGES_FILE).is_file():
                names.add(child.name)
    return sorted(names)


@dataclass(frozen=True)
class CorpusSource:
    """Where a corpus comes from: its passages file, its questions file (if any) and its directory."""

    name: str
    passages_path: Path
    questions_path: Path | None
    root: Path | None


def _source_from_dir(name: str, root: Path) -> CorpusSource:
    questions = root / QUESTIONS_FILE
    return CorpusSource(
        name=name,
        passages_path=root / PASSAGES_FILE,
        questions_path=questions if questions.is_file() else None,
        root=root,
    )


def resolve_corpus(name_or_path: str) -> CorpusSource:
    """Turn a shipped corpus name, a corpus directory or a passages file into a `CorpusSource`.

    A bare name that is shipped wins over a same-named directory in the working directory; write
    `./name` to mean the directory. A passages file gets a sibling questions.jsonl only when it is itself
    named passages.jsonl, so an arbitrary `wiki.jsonl` never picks up unrelated questions.
    """
    text = str(name_or_path)
    if not text.strip():
        raise UnknownCorpusError("empty corpus name; " + _known_hint())
    looks_like_name = os.sep not in text and (os.altsep is None or os.altsep not in text)
    if looks_like_name:
        for directory in corpora_dirs():
            root = directory / text
            if (root / PASSAGES_FILE).is_file():
                return _source_from_dir(text, root)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / PASSAGES_FILE).is_file():
            raise CorpusError(f"{path}: directory has no {PASSAGES_FILE}")
        return _source_from_dir(path.resolve().name, path)
    if path.is_file():
        if path.name == PASSAGES_FILE:
            return _source_from_dir(path.resolve().parent.name, path.parent)
        return CorpusSource(name=path.stem, passages_path=path, questions_path=None, root=None)
    raise UnknownCorpusError(
        f"unknown corpus {text!r}: not a shipped corpus and no such file or directory; {_known_hint()}"
    )


def _known_hint() -> str:
    known = known_corpora()
    listed = ", ".join(known) if known else "(none found)"
    return (
        f"known corpora: {listed}. A path also works: a directory with {PASSAGES_FILE} "
        f"(and optionally {QUESTIONS_FILE}) or a passages .jsonl file."
    )


# --------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Passages in file order with id lookup, plus lazily loaded questions.

    Passage order is the order of the file, so `index_of` positions line up with an index built from it.
    """

    name: str
    passages: list[Passage]
    source: CorpusSource
    _positions: dict[str, int] = field(init=False, repr=False)
    _questions: list[Question] | None = field(default=None, init=False, repr=False)
    _checksum: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        positions: dict[str, int] = {}
        for i, passage in enumerate(self.passages):
            if passage.id in positions:
                raise CorpusError(f"corpus {self.name!r}: duplicate passage id {passage.id!r}")
            positions[passage.id] = i
        self._positions = positions

    @classmethod
    def load(
        cls, name_or_path: str | os.PathLike[str], questions_path: str | os.PathLike[str] | None = None
    ) -> Corpus:
        """Load a shipped corpus by name or a corpus by path; `questions_path` overrides its questions."""
        source = resolve_corpus(str(name_or_path))
        if questions_path is not None:
            qpath = Path(questions_path)
            if not qpath.is_file():
                raise QuestionsError(f"{qpath}: file not found")
            source = replace(source, questions_path=qpath)
        return cls(name=source.name, passages=load_passages(source.passages_path), source=source)

    def __len__(self) -> int:
        return len(self.passages)

    def __iter__(self) -> Iterator[Passage]:
        return iter(self.passages)

    def __contains__(self, pid: object) -> bool:
        return pid in self._positions

    def by_id(self, pid: str) -> Passage:
        """The passage with id `pid`; KeyError naming the corpus if there is none."""
        return self.passages[self.index_of(pid)]

    def index_of(self, pid: str) -> int:
        """Position of passage `pid` in `passages` (and in any index built from this corpus)."""
        try:
            return self._positions[str(pid)]
        except KeyError:
            raise KeyError(f"no passage with id {pid!r} in corpus {self.name!r}") from None

    @property
    def has_questions(self) -> bool:
        return self.source.questions_path is not None

    def questions(self, split: str | None = None) -> list[Question]:
        """The corpus's questions (all, or one split), loaded on first use and cached."""
        if self.source.questions_path is None:
            raise QuestionsError(
                f"corpus {self.name!r} has no questions file ({QUESTIONS_FILE} next to {PASSAGES_FILE}); "
                "pass a questions file explicitly"
            )
        if self._questions is None:
            self._questions = load_questions(self.source.questions_path)
        if split is None:
            return list(self._questions)
        selected = [q for q in self._questions if q.split == split]
        if not selected:
            raise QuestionsError(
                f"corpus {self.name!r} has no questions in split {split!r}; "
                f"splits that exist: {self._describe_splits()}"
            )
        return selected

    def splits(self) -> list[str]:
        """Names of the splits that have at least one question, sorted."""
        if self.source.questions_path is None:
            return []
        return sorted({q.split for q in self.questions() if q.split is not None})

    def _describe_splits(self) -> str:
        splits = self.splits()
        return ", ".join(splits) if splits else "(none: the questions have no 'split' field)"

    def checksum(self) -> str:
        """sha256 of the passages file bytes: identifies the corpus version an index was built from."""
        if self._checksum is None:
            digest = hashlib.sha256()
            with self.source.passages_path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            self._checksum = digest.hexdigest()
        return self._checksum

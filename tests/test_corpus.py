"""Corpus and questions loading: formats users bring, errors that point at the bad line, shipped corpora."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from reasonrag.data.corpus import (
    Corpus,
    CorpusSource,
    corpora_dirs,
    known_corpora,
    load_passages,
    load_questions,
    resolve_corpus,
    split_sentences,
)
from reasonrag.errors import CorpusError, QuestionsError, UnknownCorpusError


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    """Write JSONL; strings are written verbatim so tests can plant malformed lines."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def make_corpus_dir(root: Path, name: str, with_questions: bool = True) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    write_lines(
        directory / "passages.jsonl",
        [
            {"id": "p1", "contents": "Paris\nParis is the capital of France. It lies on the Seine."},
            {"id": "p2", "contents": "Berlin\nBerlin is the capital of Germany."},
        ],
    )
    if with_questions:
        write_lines(
            directory / "questions.jsonl",
            [
                {"id": "q1", "question": "Capital of France?", "golden_answers": ["Paris"], "split": "train"},
                {
                    "id": "q2",
                    "question": "Capital of Germany?",
                    "golden_answers": ["Berlin"],
                    "split": "test",
                },
                {"id": "q3", "question": "River of Paris?", "golden_answers": ["Seine"], "split": "test"},
            ],
        )
    return directory


# ------------------------------------------------------------------------------------------------------
# split_sentences
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris is big. It is old.", ["Paris is big.", "It is old."]),
        (
            "Mr. Smith met Dr. Jones in St. Louis. They talked.",
            ["Mr. Smith met Dr. Jones in St. Louis.", "They talked."],
        ),
        ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
        (
            "The U.S. Army grew by 3.5 percent. Then it shrank.",
            ["The U.S. Army grew by 3.5 percent.", "Then it shrank."],
        ),
        (
            'He asked "Why?" Nobody knew! Did they? Yes.',
            ['He asked "Why?"', "Nobody knew!", "Did they?", "Yes."],
        ),
        ("He studied art. The end.", ["He studied art.", "The end."]),
        ("See No. 5 and Vol. 2 here. Done.", ["See No. 5 and Vol. 2 here.", "Done."]),
        (
            "lower case after a period. is not a new sentence",
            ["lower case after a period. is not a new sentence"],
        ),
        ("no final punctuation", ["no final punctuation"]),
        ("First paragraph\n\nSecond paragraph", ["First paragraph", "Second paragraph"]),
        ("  padded.   Text.  ", ["padded.", "Text."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_split_sentences_blank_and_nonblank() -> None:
    assert split_sentences("") == []
    assert split_sentences("   \n ") == []
    assert split_sentences("...") == ["..."]


# ------------------------------------------------------------------------------------------------------
# load_passages: accepted formats
# ------------------------------------------------------------------------------------------------------


def test_flashrag_format_with_quoted_title_and_int_id(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "wiki.jsonl",
        [
            {"id": 0, "contents": '"Paris"\nParis is the capital of France. It lies on the Seine.'},
            {"id": "1", "contents": "Berlin\nBerlin is the capital\nof Germany."},
        ],
    )
    first, second = load_passages(path)
    assert first.id == "0"
    assert first.title == "Paris"
    assert first.text == "Paris is the capital of France. It lies on the Seine."
    assert first.sentences == ("Paris is the capital of France.", "It lies on the Seine.")
    assert first.contents == "Paris\nParis is the capital of France. It lies on the Seine."
    # Only the first line is the title; later newlines belong to the text.
    assert (second.title, second.text) == ("Berlin", "Berlin is the capital\nof Germany.")


def test_contents_without_newline_is_text_without_title(tmp_path: Path) -> None:
    (passage,) = load_passages(
        write_lines(tmp_path / "c.jsonl", [{"id": "a", "contents": "Just text here."}])
    )
    assert (passage.title, passage.text, passage.sentences) == ("", "Just text here.", ("Just text here.",))


def test_title_text_format(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        [{"id": "a", "title": "Seine", "text": "The Seine is a river. It flows through Paris."}],
    )
    (passage,) = load_passages(path)
    assert passage.title == "Seine"
    assert passage.sentences == ("The Seine is a river.", "It flows through Paris.")
    assert passage.contents == "Seine\nThe Seine is a river. It flows through Paris."


def test_sentences_format_keeps_given_sentences(tmp_path: Path) -> None:
    # A given sentence list is kept exactly: supporting-fact indices point into it.
    sentences = ["Dr. Who is a show.", "It started in 1963."]
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "title": "Doctor Who", "sentences": sentences},
            {
                "id": "b",
                "contents": "Doctor Who\nDr. Who is a show. It started in 1963.",
                "sentences": ["x y z"],
            },
        ],
    )
    only_sentences, with_contents = load_passages(path)
    assert only_sentences.text == "Dr. Who is a show. It started in 1963."
    assert only_sentences.sentences == tuple(sentences)
    assert with_contents.sentences == ("x y z",)
    assert with_contents.title == "Doctor Who"


def test_explicit_title_is_not_unquoted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [{"id": "a", "title": '"Heroes"', "text": "A song."}])
    assert load_passages(path)[0].title == '"Heroes"'


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl", ["", {"id": "a", "contents": "T\nx."}, "   ", {"id": "b", "contents": "U\ny."}]
    )
    assert [p.id for p in load_passages(path)] == ["a", "b"]


# ------------------------------------------------------------------------------------------------------
# load_passages: errors name the file and the line
# ------------------------------------------------------------------------------------------------------

GOOD = {"id": "ok", "contents": "Title\nSome text."}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "a", "contents": "T\\nx.",', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ({"contents": "T\nx."}, "missing field 'id'"),
        ({"id": None, "contents": "T\nx."}, "'id' must be a string or an integer"),
        ({"id": True, "contents": "T\nx."}, "'id' must be a string or an integer"),
        ({"id": "", "contents": "T\nx."}, "'id' is empty"),
        ({"id": "a", "contents": 5}, "'contents' must be a string"),
        ({"id": "a", "title": ["T"], "text": "x."}, "'title' must be a string"),
        ({"id": "a", "sentences": "one sentence"}, "'sentences' must be a list of strings"),
        ({"id": "a", "sentences": ["ok", 3]}, "'sentences' must be a list of strings"),
        ({"id": "a", "contents": "   "}, "empty 'contents'"),
        ({"id": "a", "title": "", "text": " "}, "empty contents"),
        ({"id": "a", "url": "http://x"}, "none of 'contents', 'text' or 'sentences'"),
    ],
)
def test_malformed_passage_line(tmp_path: Path, bad_line: str | dict, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, "", bad_line])
    with pytest.raises(CorpusError, match=message) as info:
        load_passages(path)
    assert f"{path}:3:" in str(info.value)
    assert info.value.code == "INVALID_CORPUS"


def test_duplicate_passage_id_names_both_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "dup.jsonl", [{"id": 7, "contents": "A\na."}, GOOD, {"id": "7", "contents": "B\nb."}]
    )
    with pytest.raises(CorpusError) as info:
        load_passages(path)
    message = str(info.value)
    assert f"{path}:3:" in message
    assert "duplicate passage id '7'" in message
    assert "first on line 1" in message


def test_empty_or_missing_passages_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty") as info:
        load_passages(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(CorpusError, match="not found"):
        load_passages(tmp_path / "missing.jsonl")


def test_invalid_utf8_is_a_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "contents": "T\\nx."}\n{"id": "b", "contents": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match="UTF-8") as info:
        load_passages(path)
    assert f"{path}:2:" in str(info.value)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "contents": "T\\nx."}\n')
    assert load_passages(path)[0].id == "a"


# ------------------------------------------------------------------------------------------------------
# load_questions
# ------------------------------------------------------------------------------------------------------


def test_questions_formats(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "q.jsonl",
        [
            {
                "id": 1,
                "question": " Who? ",
                "golden_answers": ["A", "B"],
                "split": "dev",
                "metadata": {"k": 1},
            },
            {"id": "2", "question": "What?", "answer": "C"},
            {"id": "3", "question": "Where?", "answers": ["D"]},
            {"id": "4", "question": "When?"},
        ],
    )
    q1, q2, q3, q4 = load_questions(path)
    assert (q1.id, q1.question, q1.golden_answers, q1.split, q1.metadata) == (
        "1",
        "Who?",
        ["A", "B"],
        "dev",
        {"k": 1},
    )
    assert q2.golden_answers == ["C"]
    assert q3.golden_answers == ["D"]
    assert (q4.golden_answers, q4.split, q4.metadata) == ([], None, {})


QGOOD = {"id": "ok", "question": "Fine?", "golden_answers": ["yes"]}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json}", "invalid JSON"),
        ('"just a string"', "expected a JSON object"),
        ({"question": "Q?", "golden_answers": ["a"]}, "missing field 'id'"),
        ({"id": "q", "golden_answers": ["a"]}, "missing or empty 'question'"),
        ({"id": "q", "question": "  ", "golden_answers": ["a"]}, "missing or empty 'question'"),
        ({"id": "q", "question": "Q?", "golden_answers": "a"}, "'golden_answers' must be a list of strings"),
        (
            {"id": "q", "question": "Q?", "golden_answers": ["a", 1990]},
            "'golden_answers' must be a list of strings",
        ),
        ({"id": "q", "question": "Q?", "answer": 3}, "'answer' must be a string"),
        ({"id": "q", "question": "Q?", "answers": "a"}, "'answers' must be a list of strings"),
        ({"id": "q", "question": "Q?", "split": 1}, "'split' must be a string"),
        ({"id": "q", "question": "Q?", "metadata": []}, "'metadata' must be an object"),
        ({"id": "ok", "question": "Again?"}, "duplicate question id 'ok' \\(first on line 1\\)"),
    ],
)
def test_malformed_question_line(tmp_path: Path, bad_line: str | dict, message: str) -> None:
    path = write_lines(tmp_path / "q.jsonl", [QGOOD, "", bad_line])
    with pytest.raises(QuestionsError, match=message) as info:
        load_questions(path)
    assert f"{path}:3:" in str(info.value)
    assert info.value.code == "INVALID_QUESTIONS"


def test_empty_questions_file(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(QuestionsError, match="empty"):
        load_questions(path)


# ------------------------------------------------------------------------------------------------------
# Finding corpora
# ------------------------------------------------------------------------------------------------------


def test_env_corpora_dir_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_corpus_dir(tmp_path, "tiny")
    make_corpus_dir(tmp_path, "hotpotqa")  # shadows the shipped one
    (tmp_path / "not_a_corpus").mkdir()
    monkeypatch.setenv("REASONRAG_CORPORA", str(tmp_path / "missing") + ":" + str(tmp_path))
    assert corpora_dirs()[0] == tmp_path
    assert "tiny" in known_corpora()
    assert "not_a_corpus" not in known_corpora()
    assert resolve_corpus("hotpotqa").passages_path == tmp_path / "hotpotqa" / "passages.jsonl"
    assert len(Corpus.load("tiny")) == 2


def test_unknown_corpus_lists_known_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_corpus_dir(tmp_path, "tiny")
    monkeypatch.setenv("REASONRAG_CORPORA", str(tmp_path))
    with pytest.raises(UnknownCorpusError) as info:
        Corpus.load("no-such-corpus")
    message = str(info.value)
    assert "no-such-corpus" in message
    assert "tiny" in message
    assert "hotpotqa" in message
    assert "path" in message
    assert info.value.code == "UNKNOWN_CORPUS"


def test_resolve_directory_and_files(tmp_path: Path) -> None:
    directory = make_corpus_dir(tmp_path, "mine")
    by_dir = resolve_corpus(str(directory))
    assert by_dir == CorpusSource(
        name="mine",
        passages_path=directory / "passages.jsonl",
        questions_path=directory / "questions.jsonl",
        root=directory,
    )
    by_file = resolve_corpus(str(directory / "passages.jsonl"))
    assert (by_file.name, by_file.questions_path) == ("mine", directory / "questions.jsonl")
    # A passages file with another name does not pick up a neighbouring questions.jsonl.
    other = directory / "wiki.jsonl"
    other.write_bytes((directory / "passages.jsonl").read_bytes())
    by_other = resolve_corpus(str(other))
    assert (by_other.name, by_other.questions_path, by_other.root) == ("wiki", None, None)


def test_directory_without_passages_is_a_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="passages.jsonl"):
        resolve_corpus(str(tmp_path))


# ------------------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------------------


def test_corpus_lookup_questions_and_checksum(tmp_path: Path) -> None:
    directory = make_corpus_dir(tmp_path, "mine")
    corpus = Corpus.load(str(directory))
    assert corpus.name == "mine"
    assert [p.id for p in corpus.passages] == ["p1", "p2"]
    assert corpus.index_of("p2") == 1
    assert corpus.by_id("p1").title == "Paris"
    with pytest.raises(KeyError, match="nope"):
        corpus.by_id("nope")
    assert [q.id for q in corpus.questions()] == ["q1", "q2", "q3"]
    assert [q.id for q in corpus.questions("test")] == ["q2", "q3"]
    with pytest.raises(QuestionsError, match="splits that exist: test, train"):
        corpus.questions("validation")

    passages_file = directory / "passages.jsonl"
    expected = hashlib.sha256(passages_file.read_bytes()).hexdigest()
    assert corpus.checksum() == expected
    passages_file.write_text('{"id": "z", "contents": "Z\\nz."}\n', encoding="utf-8")
    assert corpus.checksum() == expected  # computed once: describes what was loaded


def test_corpus_without_questions_and_explicit_questions(tmp_path: Path) -> None:
    directory = make_corpus_dir(tmp_path, "bare", with_questions=False)
    corpus = Corpus.load(str(directory))
    with pytest.raises(QuestionsError, match="no questions file"):
        corpus.questions()
    questions = write_lines(tmp_path / "qs.jsonl", [{"id": "x", "question": "Q?", "answer": "a"}])
    with_questions = Corpus.load(str(directory), questions_path=questions)
    assert [q.id for q in with_questions.questions()] == ["x"]
    with pytest.raises(QuestionsError, match="not found"):
        Corpus.load(str(directory), questions_path=tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------------------
# Shipped corpora
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "splits", "sentence_level"),
    [
        ("hotpotqa", {"train": 666, "dev": 200, "test": 300}, True),
        ("2wikimultihopqa", {"train": 545, "dev": 200, "test": 300}, True),
        ("musique", {"test": 626}, False),
    ],
)
def test_shipped_corpus_gold_evidence_resolves(
    name: str, splits: dict[str, int], sentence_level: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REASONRAG_CORPORA", raising=False)
    assert name in known_corpora()
    corpus = Corpus.load(name)
    questions = corpus.questions()
    counts: dict[str, int] = {}
    for q in questions:
        assert q.split is not None
        counts[q.split] = counts.get(q.split, 0) + 1
    assert counts == splits
    for q in questions:
        assert q.golden_answers and all(a.strip() for a in q.golden_answers)
        gold = q.metadata["gold_passages"]
        assert len(gold) >= 2, q.id  # every question here is multi-hop
        for pid in gold:
            assert pid in corpus, (q.id, pid)
        if sentence_level:
            assert q.metadata["supporting_facts"], q.id
            for pid, index in q.metadata["supporting_facts"]:
                assert pid in gold, (q.id, pid)
                sentences = corpus.by_id(pid).sentences
                assert 0 <= index < len(sentences) and sentences[index], (q.id, pid, index)
        else:
            hops = [step["passage_id"] for step in q.metadata["question_decomposition"]]
            assert set(hops) == set(gold), q.id
    notice = (corpus.source.root / "NOTICE").read_text(encoding="utf-8")
    assert "License" in notice and "Wikipedia" in notice


def test_shipped_hotpotqa_keeps_original_sentence_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REASONRAG_CORPORA", raising=False)
    corpus = Corpus.load("hotpotqa")
    (question,) = [q for q in corpus.questions() if q.id == "5a8b57f25542995d1e6f1371"]
    assert question.golden_answers == ["yes"]
    assert question.metadata["supporting_facts"] == [["Scott Derrickson", 0], ["Ed Wood", 0]]
    first = corpus.by_id("Scott Derrickson").sentences[0]
    assert first.startswith("Scott Derrickson (born July 16, 1966) is an American director")

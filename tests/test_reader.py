"""The embedded reader: input packing, the shipped weights, and a training round trip."""

from __future__ import annotations

import json

import pytest

from reasonrag import ModelError
from reasonrag.policies.reader import SHIPPED_READER, Chunk, Reader, make_window, render_context

CHUNKS = [
    Chunk(
        "Miriam Okafor",
        ("Miriam Okafor is a Nigerian-British film director.", "She was born in Enugu, Nigeria."),
    ),
    Chunk("Lisbon", ("Lisbon is the capital and largest city of Portugal.",)),
]


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader()


def test_context_rendering_keeps_every_sentence_addressable():
    context, spans = render_context(CHUNKS)
    for ci, si, a, b in spans:
        assert context[a:b] == CHUNKS[ci].sentences[si]
    assert context.startswith("Miriam Okafor: ")


def test_window_maps_tokens_to_sentences_and_drops_what_does_not_fit(reader):
    w = make_window(reader.tokenizer, "Where was she born?", CHUNKS, 384)
    assert w.sentences == [(0, 0), (0, 1), (1, 0)]
    tokens_of_second = [t for t, s in enumerate(w.sentence_of_token) if s == 1]
    text = w.context[w.offsets[tokens_of_second[0]][0] : w.offsets[tokens_of_second[-1]][1]]
    assert text == "She was born in Enugu, Nigeria."
    short = make_window(reader.tokenizer, "Where was she born?", CHUNKS, 24)
    assert len(short.input_ids) <= 24 and len(short.sentences) < 3


def test_shipped_reader_finds_the_evidence_and_the_answer(reader):
    (reading,) = reader.read("Where was the film director Miriam Okafor born?", [CHUNKS])
    scores = reading.sentence_scores
    assert scores[(0, 1)] > scores[(1, 0)]
    assert reading.kind_probs["span"] > max(reading.kind_probs["yes"], reading.kind_probs["no"])
    assert "Enugu" in reading.spans[0][0]
    assert abs(sum(reading.kind_probs.values()) - 1) < 1e-5


def test_length_penalty_prefers_the_short_answer_over_its_qualifiers(reader):
    """Start and end are predicted apart; the penalty moves mass from "Enugu, Nigeria" to "Enugu"."""
    import torch

    from reasonrag.policies.reader import best_spans

    w = make_window(reader.tokenizer, "Where was she born?", CHUNKS, 384)
    at = w.context.index("Enugu")

    def token(*, starting: int = -1, ending: int = -1) -> int:
        return next(t for t, o in enumerate(w.offsets) if o and (o[0] == starting or o[1] == ending))

    first, short_end = token(starting=at), token(ending=at + len("Enugu"))
    long_end = token(ending=w.context.rindex("Nigeria") + len("Nigeria"))
    start = torch.full((len(w.input_ids),), -10.0)
    end = torch.full((len(w.input_ids),), -10.0)
    start[first] = 5.0
    end[short_end], end[long_end] = 4.0, 4.5  # the end leans to the longer span
    assert best_spans(w, start, end, 2)[0][0] == "Enugu, Nigeria"
    penalised = best_spans(w, start, end, 2, length_penalty=0.5)
    assert [text for text, _ in penalised] == ["Enugu", "Enugu, Nigeria"]
    (plain,) = reader.read("Where was she born?", [CHUNKS])
    (short,) = reader.read("Where was she born?", [CHUNKS], length_penalty=2.0)
    assert len(short.spans[0][0]) <= len(plain.spans[0][0])


def test_shipped_reader_answers_yes_no(reader):
    chunks = [
        Chunk("Red Kestrel", ("Red Kestrel is a British rock band formed in Leeds.",)),
        Chunk("Stone Harbour", ("Stone Harbour is a British rock band formed in York.",)),
    ]
    (reading,) = reader.read("Are Red Kestrel and Stone Harbour both British bands?", [chunks])
    assert reading.kind_probs["yes"] > reading.kind_probs["no"]


def test_shipped_reader_is_small_and_reproducible():
    size = sum(f.stat().st_size for f in SHIPPED_READER.iterdir())
    assert size < 30 * 1024 * 1024
    manifest = json.loads((SHIPPED_READER / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m reasonrag.training.reader_training")
    assert set(manifest["config"]["corpora"]) <= {"hotpotqa", "2wikimultihopqa"}  # never trained on MuSiQue


def test_missing_reader_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="reader_training"):
        Reader(tmp_path)


def _extra_file(tmp_path) -> str:
    """Two HotpotQA-schema records with their own paragraphs, as `--extra` takes them."""
    from reasonrag.data.corpus import Corpus

    corpus = Corpus.load("hotpotqa")
    records = []
    for q in corpus.questions("train")[10:12]:
        context = [
            [corpus.by_id(pid).title, list(corpus.by_id(pid).sentences)]
            for pid in q.metadata["context_passages"]
        ]
        facts = [[corpus.by_id(pid).title, i] for pid, i in q.metadata["supporting_facts"]]
        records.append(
            {
                "_id": q.id,
                "question": q.question,
                "answer": q.golden_answers[0],
                "supporting_facts": facts,
                "context": context,
            }
        )
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(records))
    return str(path)


def test_training_round_trip(tmp_path):
    from reasonrag.training.reader_training import main

    out = tmp_path / "reader"
    args = ["--out", str(out), "--limit", "2", "--epochs", "1", "--batch-size", "4", "--corpora", "hotpotqa"]
    extra = ["--extra", _extra_file(tmp_path), "--cloze", "6"]
    assert main([*args, "--work", str(tmp_path / "work"), *extra]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["limit"] == 2 and manifest["dev"][0]["epoch"] == 1
    assert manifest["config"]["extra"] and manifest["train_windows_per_epoch"] > 8 + 6  # 4 questions, 6 cloze
    trained = Reader(out)
    (reading,) = trained.read("Where was she born?", [CHUNKS])
    assert set(reading.kind_probs) == {"span", "yes", "no", "insufficient"}


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from reasonrag.training import reader_training as rt

    cfg = rt.ReaderTrainingConfig(corpora=["hotpotqa"], epochs=2, batch_size=4, limit=2, checkpoint_every=1)
    rt.train_reader(cfg, tmp_path / "whole")
    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def dies_after_four(self, *a, **k):  # a kill in the middle of the second epoch (3 + 2 batches)
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_after_four)
    with pytest.raises(KeyboardInterrupt):
        rt.train_reader(cfg, tmp_path / "resumed", tmp_path / "work")
    calls["n"] = -100  # the rerun may take its steps
    manifest = rt.train_reader(cfg, tmp_path / "resumed", tmp_path / "work")
    assert calls["n"] == -100 + 1  # it took only the step the kill cut off, not the whole run again
    assert [h["epoch"] for h in manifest["dev"]] == [1, 2]
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_cloze_windows_ask_for_a_span_of_the_paragraph():
    import random

    from transformers import AutoTokenizer

    from reasonrag.data.types import Passage
    from reasonrag.retrieval.encoder import resolve_encoder
    from reasonrag.training.reader_cloze import cloze_example

    sentences = (
        "Ophur was a rock band from the Chicago suburbs.",
        "The band formed in 1994 in DuPage County.",
        "It moved to Chicago in 1999.",
    )
    passage = Passage("Ophur", "Ophur", " ".join(sentences), sentences)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(None))
    rng = random.Random(0)
    for _ in range(20):
        e = cloze_example(passage, None, tokenizer, 128, rng)
        answer = e.window.context[e.window.offsets[e.start][0] : e.window.offsets[e.end][1]]
        question = tokenizer.decode(e.window.input_ids[1 : e.window.first_context_token - 1])
        assert answer in {"Chicago", "1994", "DuPage County", "1999"}
        assert answer.lower() not in question  # the question hides the span it asks for
        # the sentence the answer is read from is the one marked as evidence
        assert e.sentence_labels[e.window.sentence_of_token[e.start]] == 1.0
    long = ("Ophur played in Chicago " + "and then again " * 60 + "in 1999.", "It moved to Chicago in 1999.")
    passage = Passage("Ophur", "Ophur", " ".join(long), long)
    for _ in range(10):  # a question that would leave the context no room is not made
        e = cloze_example(passage, None, tokenizer, 128, rng)
        assert e is None or e.window.first_context_token < 64

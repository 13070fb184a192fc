"""Where a run's wrong answers were lost: charged to the first stage that failed them."""

from reasonrag.evaluation.losses import where_lost


def _record(answer: str, gold: str, recall: float, kept: list[str], f1: float) -> dict:
    extract = {"stage": "extract", "observation": [{"text": t} for t in kept]}
    return {
        "answer": answer,
        "golden_answers": [gold],
        "retrieval_recall": recall,
        "f1": f1,
        "steps": [extract],
    }


def test_each_wrong_answer_is_charged_to_the_first_stage_that_failed():
    records = [
        _record("Paris", "Paris", 1.0, ["Paris is the capital."], 1.0),  # right: no charge
        _record("Lyon", "Paris", 0.5, ["Paris is the capital."], 0.0),  # a gold paragraph missing
        _record("Lyon", "Paris", 1.0, ["Lyon is a city."], 0.0),  # all found, answer not kept
        _record("Lyon", "Paris", 1.0, ["Lyon and Paris are cities."], 0.0),  # kept, wrong span read
        _record("no", "yes", 1.0, ["Both are bands."], 0.0),  # yes/no never appears in evidence
        _record("Parisian", "Paris", 1.0, ["Parisians live there."], 0.0),  # a word inside another is no hit
    ]
    assert where_lost(records) == {
        "questions": 6,
        "wrong": 5,
        "gold_paragraph_not_retrieved": 1,
        "answer_not_in_kept_evidence": 3,
        "wrong_span_read": 1,
    }

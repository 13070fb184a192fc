"""Outcome rewards: hand-worked cases of the SQuAD/HotpotQA normalisation, EM, F1 and cover-EM."""

from __future__ import annotations

import pytest

from reasonrag.data.rewards import (
    OUTCOME_METRICS,
    cover_em,
    cover_em_reward,
    em_reward,
    exact_match,
    f1_reward,
    f1_score,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The  Quick, Brown fox!", "quick brown fox"),
        ("  An apple a day\n", "apple day"),
        # Articles are whole words only: "Theatre", "Anthem" and "Athens" keep their letters.
        ("Theatre an Anthem in Athens", "theatre anthem in athens"),
        # Punctuation is deleted, not replaced by a space (official behaviour).
        ("U.S.A.", "usa"),
        ("well-known", "wellknown"),
        ("don't", "dont"),
        # Punctuation goes first, so "the-" becomes the article "the" only if it stands alone afterwards.
        ("the-end", "theend"),
        ("(the) end", "end"),
        # Only ASCII punctuation is removed; other characters are kept, lower-cased.
        ("Łódź – 1990–1995", "łódź – 1990–1995"),
        ("CAFÉ", "café"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match_normalises_and_takes_max_over_golds() -> None:
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    assert exact_match("Paris", ["London", "paris", "Rome"]) == 1.0
    assert exact_match("Berlin", ["London", "paris"]) == 0.0


def test_bare_string_gold_is_one_answer_not_characters() -> None:
    # Iterating "Paris" would give golds "P", "a", ... and "p" would then match.
    assert exact_match("P", "Paris") == 0.0
    assert exact_match("paris", "Paris") == 1.0
    assert f1_score("P", "Paris") == 0.0
    assert cover_em("a P", "Paris") == 0.0


def test_f1_hand_worked() -> None:
    # "cat sat on mat" vs "cat on mat": 3 common, precision 3/4, recall 1 -> 6/7.
    assert f1_score("the cat sat on the mat", "cat on the mat") == pytest.approx(6 / 7)
    # Counts are clipped: 1 common token, precision 1/3, recall 1 -> 0.5 (a set-based F1 would say 1).
    assert f1_score("cat cat cat", "cat") == pytest.approx(0.5)
    assert f1_score("dog", "cat") == 0.0


def test_f1_takes_max_over_golds() -> None:
    # vs "obama": p=1/2, r=1 -> 2/3; vs "barack hussein obama": p=1, r=2/3 -> 0.8.
    assert f1_score("Barack Obama", ["Obama", "Barack Hussein Obama"]) == pytest.approx(0.8)


def test_f1_yes_no_rule() -> None:
    # Plain token F1 would give 2/3 and 1/2; the official rule gives 0 when a yes/no side differs.
    assert f1_score("yes", "yes sir") == 0.0
    assert f1_score("yes it is", "Yes") == 0.0
    assert f1_score("noanswer", "no answer") == 0.0
    assert f1_score("Yes.", "yes") == 1.0
    assert f1_score("no", ["yes", "No"]) == 1.0
    # Normal answers that merely contain "yes" are not special.
    assert f1_score("yes man", "yes men") == pytest.approx(0.5)


def test_empty_prediction_and_empty_golds() -> None:
    assert exact_match("", ["Paris"]) == 0.0
    assert f1_score("", ["Paris"]) == 0.0
    assert cover_em("", ["Paris"]) == 0.0
    for metric in OUTCOME_METRICS.values():
        assert metric("Paris", []) == 0.0


def test_cover_em_whole_tokens() -> None:
    assert cover_em("It was built in 1990.", ["1990"]) == 1.0
    assert cover_em("It was built in 19901.", ["1990"]) == 0.0
    assert cover_em("the United States of America", ["United States"]) == 1.0
    assert cover_em("He was The Beatles' drummer", ["Beatles"]) == 1.0
    assert cover_em("Ringo", ["Ringo Starr"]) == 0.0
    # A gold answer that normalises to nothing must not match everything.
    assert cover_em("anything at all", ["The", "."]) == 0.0


def test_unicode_answers() -> None:
    assert exact_match("Małgorzata Braunek", ["małgorzata braunek"]) == 1.0
    assert exact_match("Malgorzata Braunek", ["Małgorzata Braunek"]) == 0.0
    assert f1_score("Andrzej Żuławski", ["Xawery Żuławski"]) == pytest.approx(0.5)
    assert cover_em("born in Łódź, Poland", ["Łódź"]) == 1.0


def test_outcome_metrics_table() -> None:
    assert OUTCOME_METRICS == {"em": exact_match, "f1": f1_score, "cover_em": cover_em}


def test_trl_reward_functions() -> None:
    completions = ["The Eiffel Tower", "a tower in Paris", "London"]
    golds = [["Eiffel Tower"], ["Paris", "France"], "Paris"]
    # Extra dataset columns arrive as keyword arguments and must be accepted.
    assert em_reward(completions, golden_answers=golds, prompts=["p"] * 3) == [1.0, 0.0, 0.0]
    assert cover_em_reward(completions, golden_answers=golds) == [1.0, 1.0, 0.0]
    f1 = f1_reward(completions, golden_answers=golds)
    assert f1 == [1.0, pytest.approx(0.5), 0.0]


def test_trl_reward_functions_accept_conversational_completions() -> None:
    completions = [[{"role": "assistant", "content": "Paris"}], [{"role": "assistant", "content": "Rome"}]]
    assert em_reward(completions, golden_answers=[["paris"], ["paris"]]) == [1.0, 0.0]


def test_trl_reward_functions_reject_misaligned_batches() -> None:
    with pytest.raises(ValueError, match="line up"):
        em_reward(["a", "b"], golden_answers=[["a"]])

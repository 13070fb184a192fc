"""Bridge-entity guesses for later-hop queries."""

from reasonrag.policies.embedded import mentions


def test_names_stay_inside_sentences_and_skip_the_question():
    got = mentions(
        [
            "The Quiet Orchard is a 1994 novel by Tomas Varga.",
            "Harbor Lights is a film directed by Miriam Okafor.",
        ],
        "Who wrote the novel The Quiet Orchard?",
    )
    assert got == ["Tomas Varga", "Harbor Lights", "Miriam Okafor"]


def test_non_ascii_names_and_full_names_first():
    got = mentions(
        ["Kiss and Tell is a 1945 American comedy starring Shirley Temple.", "Xawery Żuławski directed it."],
        "Which position was held by the woman in the film Kiss and Tell?",
    )
    assert got[:2] == ["Shirley Temple", "Xawery Żuławski"]
    assert "1945" not in " ".join(got)

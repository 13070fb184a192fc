"""Bridge-entity guesses for later-hop queries."""

from reasonrag.policies.bridges import bridge_queries, mentions, relation_words


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


def test_relation_words_keep_what_is_asked_and_drop_the_names():
    question = "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"
    assert relation_words(question) == "government position held woman portrayed film"


def test_bridge_queries_search_each_new_name_with_the_relation_latest_hop_first():
    question = "Who is the mother of the director of film Polish Wedding?"
    evidence = [
        {"hop": 0, "text": "Polish Wedding is a 1998 film directed by Theresa Connelly."},
        {"hop": 1, "text": "Theresa Connelly was born on May 3 in Wayne, Pennsylvania, to Ann Connelly."},
    ]
    retrieved = [{"title": "Polish Wedding"}, {"title": "Theresa Connelly"}]
    queries = bridge_queries(question, evidence, retrieved)
    # Theresa Connelly's own passage was found already: searching her again would bring strangers.
    assert queries[:2] == ["Wayne Pennsylvania mother director film", "Ann Connelly mother director film"]
    assert not any(q.startswith(("Theresa Connelly", "May")) for q in queries)  # found already; a month
    assert bridge_queries(question, [], retrieved) == []

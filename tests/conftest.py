"""Shared fixtures: the real default encoder (loaded once) and a small passage list."""

from __future__ import annotations

import pytest

from reasonrag.data.types import Passage

# (id, title, text): one clear topic each, so a paraphrased question has one obvious answer.
_SMALL_CORPUS = [
    ("p00", "Paris", "Paris is the capital and largest city of France. It lies on the Seine."),
    ("p01", "Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    (
        "p02",
        "Python (programming language)",
        "Python is a high-level programming language created by Guido van Rossum.",
    ),
    (
        "p03",
        "Photosynthesis",
        "Photosynthesis is how plants turn sunlight, water and carbon dioxide into sugar.",
    ),
    (
        "p04",
        "Great Wall of China",
        "The Great Wall of China is a series of fortifications built across northern China.",
    ),
    ("p05", "Albert Einstein", "Albert Einstein was a physicist who developed the theory of relativity."),
    ("p06", "Amazon River", "The Amazon River in South America is the largest river by discharge of water."),
    ("p07", "Mona Lisa", "The Mona Lisa is a portrait painted by Leonardo da Vinci, kept in the Louvre."),
    ("p08", "Honey bee", "Honey bees live in colonies, pollinate flowers and make honey from nectar."),
    ("p09", "Tokyo", "Tokyo is the capital of Japan and one of the most populous cities in the world."),
    ("p10", "Basketball", "Basketball is a team sport in which players shoot a ball through a hoop."),
    ("p11", "Coffee", "Coffee is a brewed drink prepared from roasted coffee beans."),
    ("p12", "Moon landing", "Apollo 11 landed the first humans on the Moon in July 1969."),
    ("p13", "Penicillin", "Penicillin, discovered by Alexander Fleming in 1928, was the first antibiotic."),
    ("p14", "Violin", "The violin is a wooden string instrument played with a bow."),
    ("p15", "Sahara", "The Sahara is the largest hot desert in the world, covering much of North Africa."),
    ("p16", "Chess", "Chess is a board game for two players in which each tries to checkmate the king."),
    ("p17", "Volcano", "A volcano is a rupture in the crust through which lava, ash and gases escape."),
    ("p18", "Shakespeare", "William Shakespeare was an English playwright who wrote Hamlet and Macbeth."),
    ("p19", "Bitcoin", "Bitcoin is a decentralized digital currency that runs on a blockchain."),
]


@pytest.fixture(scope="session")
def encoder():
    """The default sentence encoder (embedded all-MiniLM-L6-v2), loaded once for the whole run."""
    from reasonrag.retrieval.encoder import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def small_passages() -> list[Passage]:
    """Twenty one-topic passages."""
    return [Passage(id=pid, title=title, text=text, sentences=(text,)) for pid, title, text in _SMALL_CORPUS]

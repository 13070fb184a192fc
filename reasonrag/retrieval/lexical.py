"""BM25 over a corpus's passages, and its fusion with the dense scores.

Why: a multi-hop question is full of names (people, films, places), and the later hop searches a bridge
entity by name. Exact term matching is strongest where a small sentence encoder is weakest, so the dense
retriever adds `weight` x (BM25 score / the query's best BM25 score) to (1 - weight) x its cosine, over
the union of both top lists. Measured on dev in docs/results.md ("Hybrid retrieval").

The index is a sparse (terms x passages) matrix of BM25 term weights (Robertson's saturation with
k1, b), built in memory the first time it is needed: about 2 s for 11,000 passages on one core.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

# BM25's share of the fused score (0: dense only); chosen on dev, see docs/results.md "Hybrid retrieval".
# Here, with scipy imported lazily, so the CLI's --help can say it without loading anything heavy.
DEFAULT_LEXICAL_WEIGHT = 0.3
# Each list (dense, BM25) offers this many candidates (at least) to the fusion.
FUSION_CANDIDATES = 100
# Function words carry no evidence of a passage; keeping them only lets long passages win.
STOPWORDS = frozenset(
    "a an the of in on at to for and or nor but is was were are be been being by with as from that this "
    "these those which who whom whose what when where why how did does do has have had it its his her "
    "their they he she him them than then also into about after before not no so such there here".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens without accents or stopwords ("Beyoncé's" -> ["beyonce", "s"])."""
    folded = text.lower()
    if not folded.isascii():
        folded = "".join(ch for ch in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(ch))
    return [t for t in _TOKEN.findall(folded) if t not in STOPWORDS]


class LexicalIndex:
    """BM25 term weights of passages: `scores(queries)` is one sparse product."""

    def __init__(self, texts: Sequence[str], *, k1: float = 0.9, b: float = 0.4) -> None:
        import scipy.sparse as sp

        counts = [Counter(tokens(t)) for t in texts]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        self.vocabulary = {term: i for i, term in enumerate(sorted(df))}
        n = len(counts)
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        mean_length = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
        idf = {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        rows, cols, vals = [], [], []
        for row, c in enumerate(counts):
            norm = k1 * (1.0 - b + b * lengths[row] / mean_length)
            for term, tf in c.items():
                rows.append(self.vocabulary[term])
                cols.append(row)
                vals.append(idf[term] * tf * (k1 + 1.0) / (tf + norm))
        self.weights = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(self.vocabulary), n)
        )

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), passages) BM25 scores; a query with no known term scores 0 everywhere."""
        import scipy.sparse as sp

        rows, cols = [], []
        for i, q in enumerate(queries):
            for term in tokens(q):
                j = self.vocabulary.get(term)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        onehot = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(queries), len(self.vocabulary))
        )
        return np.asarray((onehot @ self.weights).todense(), dtype=np.float32)


class LazyLexicalIndex:
    """A LexicalIndex built on first use (thread-safe): a dense-only retriever never pays for it."""

    def __init__(self, texts_of: Callable[[], list[str]]) -> None:
        self._texts_of = texts_of
        self._index: LexicalIndex | None = None
        self._lock = threading.Lock()

    def get(self) -> LexicalIndex:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = LexicalIndex(self._texts_of())
        return self._index


def fuse(dense_scores: np.ndarray, lexical_scores: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) x cosine + weight x BM25 scaled by the query's best BM25 among the candidates."""
    best = float(lexical_scores.max()) if lexical_scores.size else 0.0
    scaled = lexical_scores / best if best > 0 else np.zeros_like(lexical_scores)
    return (1.0 - weight) * dense_scores + weight * scaled

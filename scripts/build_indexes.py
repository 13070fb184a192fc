"""Build the prebuilt dense indexes that ship inside shipped corpora: corpora/NAME/index/.

    python scripts/build_indexes.py                      # every shipped corpus
    python scripts/build_indexes.py --corpus hotpotqa    # just one (repeat --corpus for more)

An index that is already valid for its corpus and encoder is kept unless --force is given.
Writes are atomic, so an interrupted run leaves the previous index (or none) in place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reasonrag.data.corpus import Corpus, known_corpora  # noqa: E402
from reasonrag.errors import ReasonRAGError  # noqa: E402
from reasonrag.retrieval.encoder import encode, encoder_fingerprint, load_encoder  # noqa: E402
from reasonrag.retrieval.index import DEFAULT_EXACT_THRESHOLD, build_index, check_index_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", action="append", metavar="NAME", help="a shipped corpus (repeatable; default: all)"
    )
    parser.add_argument(
        "--encoder", default=None, help="encoder name or path (default: embedded all-MiniLM-L6-v2)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--exact-threshold", type=int, default=DEFAULT_EXACT_THRESHOLD)
    parser.add_argument("--force", action="store_true", help="rebuild even when the index is valid")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    names = args.corpus or known_corpora()
    if not names:
        print("error: no shipped corpora found", file=sys.stderr)
        return 2
    try:
        fingerprint = encoder_fingerprint(args.encoder)
        encoder = load_encoder(args.encoder)
    except ReasonRAGError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    summary = []
    for name in names:
        try:
            corpus = Corpus.load(name)
        except ReasonRAGError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if corpus.source.root is None:
            print(f"error: {name!r} is not a shipped corpus directory", file=sys.stderr)
            return 2
        out = corpus.source.root / "index"
        existing, reason = check_index_dir(out, corpus.checksum(), fingerprint, count=len(corpus.passages))
        if existing is not None and not args.force:
            print(f"{name}: index in {out} is valid ({existing.count} passages); kept", file=sys.stderr)
            index, seconds = existing, 0.0
        else:
            if (out / "manifest.json").exists():
                print(f"{name}: rebuilding ({'forced' if existing is not None else reason})", file=sys.stderr)
            started = time.perf_counter()
            index = build_index(
                corpus,
                out,
                args.encoder,
                show_progress=not args.no_progress,
                batch_size=args.batch_size,
                exact_threshold=args.exact_threshold,
            )
            seconds = time.perf_counter() - started
        # smoke check: the saved index loads and the first passage's title finds that passage
        _, check_reason = check_index_dir(out, corpus.checksum(), fingerprint, count=len(corpus.passages))
        if check_reason:
            print(f"error: {name}: the saved index does not load: {check_reason}", file=sys.stderr)
            return 1
        first = corpus.passages[0]
        _, rows = index.search(encode([first.contents], encoder), 1)
        row = {
            "corpus": name,
            "passages": index.count,
            "kind": index.kind,
            "seconds": round(seconds, 1),
            "passages_per_s": round(index.count / seconds, 1) if seconds else None,
            "bytes": sum(p.stat().st_size for p in out.iterdir()),
            "self_retrieval_ok": corpus.passages[int(rows[0][0])].id == first.id,
        }
        summary.append(row)
        print(json.dumps(row), flush=True)
    return 0 if all(r["self_retrieval_ok"] for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The predictions file of `reasonrag eval`: append-only JSONL, one answered question a line, resumable.

Every line is one question's record (answer, metrics, trajectory) with the `setting` that made it: the
corpus and every agent option. Records are appended and fsynced as they are made, so a kill loses at most
the question in flight; a rerun of the same command keeps what the file holds, answers only the rest and
computes the summary from the file. A torn last line (a kill mid-write) is cut off. A line made with
another setting, or for a question whose text or gold answers have changed, is an error that names the
difference: results of two settings are never mixed in one summary. Record order does not matter, so
concurrent writers may append in any order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reasonrag.data.files import parse_json
from reasonrag.data.types import Question
from reasonrag.errors import InputError, PredictionsError

PREDICTIONS_FORMAT = "reasonrag-predictions/1"
REQUIRED_KEYS = ("id", "answer", "em", "f1", "cover_em", "seconds", "steps")


def check_predictions_path(path: str | Path, option: str = "--predictions") -> Path:
    """The predictions path, checked before any model loads: a file (or none yet) in a usable folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file, e.g. {path / 'predictions.jsonl'}")
    existing = next((parent for parent in path.parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise InputError(f"{option} {path}: cannot read and append to it (permissions)")
    return path


def _differences(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return f"setting {old!r}"
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _wrong_types(record: dict[str, Any]) -> str | None:
    """What the summary could not read in a record, if anything (a record we wrote never has it)."""
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        return "'id' must be a string"
    bad = [k for k in ("em", "f1", "cover_em", "seconds") if not _number(record[k])]
    if bad:
        return f"{', '.join(bad)} must be numbers"
    if not isinstance(record["steps"], list):
        return "'steps' must be a list"
    return None


def read_predictions(
    path: str | Path, setting: dict[str, Any], questions: Sequence[Question] | None = None
) -> dict[str, dict[str, Any]]:
    """The records already in `path`, by question id (the first of any duplicates).

    Cuts off a torn last line. Raises PredictionsError, naming file, line and difference, for a line that
    is not a prediction, was made with another `setting`, or answers another version of a question in
    `questions` (its text or gold answers changed). The file is left as it is when it raises.
    """
    path = Path(path)
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")  # the last element follows the final newline: empty, or a torn write
    known = {q.id: q for q in questions or []}
    records: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = parse_json(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PredictionsError(
                f"{where}: not valid JSON; is this a reasonrag predictions file?"
            ) from None
        if not isinstance(record, dict) or record.get("format") != PREDICTIONS_FORMAT:
            raise PredictionsError(
                f"{where}: not a reasonrag predictions line (format {PREDICTIONS_FORMAT!r}); "
                "give --predictions a new file"
            )
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise PredictionsError(f"{where}: missing {', '.join(missing)}")
        wrong = _wrong_types(record)
        if wrong:
            raise PredictionsError(f"{where}: {wrong}")
        if record.get("setting") != setting:
            raise PredictionsError(
                f"{where}: made with another setting ({_differences(record.get('setting'), setting)}); "
                "rerun with the same options to resume, or give --predictions a new file"
            )
        q = known.get(record["id"])
        if q is not None and (
            record.get("question") != q.question or record.get("golden_answers") != q.golden_answers
        ):
            raise PredictionsError(
                f"{where}: question {q.id!r} has another text or other gold answers than the questions "
                "being evaluated; give --predictions a new file"
            )
        records.setdefault(str(record["id"]), record)
    if lines[-1]:  # a torn write: the kill came mid-line
        with path.open("r+b") as f:
            f.truncate(len(raw) - len(lines[-1]))
    return records


@contextmanager
def appending(path: str | Path | None, setting: dict[str, Any]) -> Iterator[Callable[[dict], None]]:
    """`write(record)` appends one record (with format and setting) and fsyncs; a no-op without `path`."""
    if path is None:
        yield lambda record: None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:

        def write(record: dict) -> None:
            f.write(json.dumps({"format": PREDICTIONS_FORMAT, **record, "setting": setting}) + "\n")
            f.flush()
            os.fsync(f.fileno())

        yield write

"""Checked arguments: the parser's one-line error format, bounded argument types, and the input checks every
command makes before it loads a model (so a mistake costs a second, not minutes).
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from reasonrag.errors import InputError, ModelError

USAGE_CODE = "USAGE"


class Parser(argparse.ArgumentParser):
    """argparse in our error format: one line `reasonrag: error [USAGE]: ...` and exit status 2, options
    spelled out in full (no silent abbreviations), and the closest option or choice suggested for a typo."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2)) or [
                c.strip() for c in wrong.group(2).split(",")
            ]
            message += suggestion(wrong.group(1), choices)
        self.exit(2, f"reasonrag: error [{USAGE_CODE}]: {message} (see `{self.prog} --help`)\n")

    def reject_unknown(self, extras: list[str]) -> NoReturn:
        """The error for arguments no option takes, with the option a typo probably meant."""
        options = [s for action in self._actions for s in action.option_strings]
        flags = [e for e in extras if e.startswith("-")]
        if flags:
            flag = flags[0].split("=", 1)[0]
            self.error(f"unknown option {flag}{suggestion(flag, options)}")
        self.error(f"unexpected argument(s): {' '.join(extras)}")


def suggestion(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def parse_args(parser: Parser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, sending unknown arguments to the error of the command they were given to."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = getattr(args, "command", None)
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        target = sub.choices.get(command, parser) if sub is not None and command else parser
        target.reject_unknown(extras)
    return args


# -- bounded argument types -------------------------------------------------------------------------------
def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def float_in(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval from low to high (ends open where asked)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = (
            math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not inside:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must lie in {interval}, got {text}")
        return value

    return parse


# -- input files, checked before a model loads -------------------------------------------------------------
def check_model_dir(path: str | None, option: str, make_with: str) -> None:
    """A trained-model option names a directory holding a manifest.json (None: the default is used)."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{option} {path}: no such directory (make one with `{make_with}`)")
    if not p.is_dir() or not (p / "manifest.json").is_file():
        raise ModelError(
            f"{option} {path}: not a trained model directory (no manifest.json); make one with `{make_with}`"
        )


def check_output_dir(path: str, option: str = "--out") -> None:
    """An output directory may exist (it is replaced atomically) but must not be a file."""
    p = Path(path)
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a directory")


def check_output_file(path: str, option: str = "--out") -> None:
    """An output file may exist (it is appended to) but must not be a directory, nor lie under a file."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file, e.g. {p / 'out.jsonl'}")
    existing = next((q for q in p.parents if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")


def check_agent_options(args: argparse.Namespace) -> None:
    """The agent options that can be checked without loading anything: conflicts, then model directories."""
    if getattr(args, "judge", None) and getattr(args, "prm", None) is not None:
        raise InputError("--judge and --prm both score steps: give one of them")
    no_scores = getattr(args, "no_prm", False)
    if no_scores and getattr(args, "backtrack", None):
        raise InputError("--backtrack needs step scores: drop --no-prm, or give --prm DIR")
    if no_scores and getattr(args, "best_of", 1) > 1 and getattr(args, "select", "vote") != "vote":
        raise InputError(
            f"--select {args.select} ranks trajectories by step scores: drop --no-prm, or use --select vote"
        )
    check_model_dir(getattr(args, "prm", None), "--prm", "reasonrag train-prm")
    check_model_dir(
        getattr(args, "reader", None), "--reader", "python -m reasonrag.training.reader_training --out DIR"
    )
    policy = getattr(args, "policy", None)
    if policy != "untrained":
        check_model_dir(policy, "--policy", "reasonrag train-policy")

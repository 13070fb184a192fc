"""The `reasonrag` parser: every command registers itself from its own module; errors become one line."""

from __future__ import annotations

import argparse
import sys

from reasonrag.cli import ask, chat, evaluate, export, index, label, prm, serve, train_policy, ui
from reasonrag.cli.checks import Parser, parse_args
from reasonrag.cli.options import quiet_libraries
from reasonrag.data.terminal import terminal_text
from reasonrag.errors import ReasonRAGError


def make_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="reasonrag",
        description="Agentic RAG with process rewards: a retrieve -> extract -> synthesize LangGraph agent "
        "that runs offline on a laptop.",
        epilog="Run `reasonrag COMMAND --help` for a command's options.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    for register in (
        index.add_parser,
        ask.add_parser,
        evaluate.add_parser,
        label.add_parser,
        prm.add_train_parser,
        prm.add_eval_parser,
        chat.add_parser,
        train_policy.add_parser,
        export.add_parser,
        serve.add_parser,
        ui.add_parser,
    ):
        register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parse_args(parser, argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in trained models' manifests
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except ReasonRAGError as exc:
        print(f"reasonrag: error [{exc.code}]: {terminal_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reasonrag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""The `explorer` command line (also `python -m explorer`).

Every command has ``--help``; bad input ends with a one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import models
from .errors import ExplorerError


def _models(args: argparse.Namespace) -> int:
    if args.install:
        models.install(args.install)
    for name in args.prepare:
        print(f"{name}: cached at {models.prepare(name)}", file=sys.stderr)
    rows = models.zoo_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    columns = ["name", "source", "installed", "layers", "width", "default_layer", "chat", "notes"]
    cells = [[str(r[c]).lower() if isinstance(r[c], bool) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [columns, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="explorer",
        description="Emotion Vector Explorer: emotion read-outs inside language models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser(
        "models",
        help="list the model zoo: name, source package, installed or not, layers, width",
        description="List the packaged models. Any Hugging Face id or local directory works too.",
    )
    zoo.add_argument("--json", action="store_true", help="print the table as JSON")
    zoo.add_argument(
        "--install", nargs="+", default=[], metavar="NAME",
        help="pip-install these zoo models' packages (with --no-deps) first",
    )
    zoo.add_argument(
        "--prepare", nargs="+", default=[], metavar="NAME",
        help="de-quantize these zoo models into the cache now, so later loads take seconds",
    )
    zoo.set_defaults(run=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return args.run(args)
    except ExplorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

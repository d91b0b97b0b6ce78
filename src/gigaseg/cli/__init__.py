"""The ``gigaseg`` command: a thin shell over the library.

Subcommands live in small ``_cli_*`` modules, one per area, each with a
``register(subparsers)`` function (top-level commands) and optionally a
``register_bench(bench_subparsers)`` function (``gigaseg bench <name>``). A subcommand
sets ``func`` to its runner. Heavy imports (torch, tifffile, ...) happen inside the
runners so that ``gigaseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import GigasegError


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except a None default: its help text says what None means."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gigaseg",
        description="End-to-end deep learning on whole gigapixel pathology images.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"gigaseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = [importlib.import_module(name) for name in _COMMAND_MODULES]
    for module in modules:
        if hasattr(module, "register"):
            module.register(sub, _Formatter)
    bench = sub.add_parser(
        "bench",
        help="benchmarks that print JSON",
        description="Benchmarks. Each prints one JSON object per run on stdout.",
        formatter_class=_Formatter,
    )
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_sub.required = True
    for module in modules:
        if hasattr(module, "register_bench"):
            module.register_bench(bench_sub, _Formatter)
    return parser


# Modules that contribute subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "gigaseg.cli.engine",
    "gigaseg.cli.synth",
    "gigaseg.cli.store",
    "gigaseg.cli.train",
    "gigaseg.cli.predict",
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GigasegError as exc:
        print(f"gigaseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gigaseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``gigaseg`` command: a thin shell over the library.

Subcommands live in small ``_cli_*`` modules, one per area, each with a
``register(subparsers)`` function (top-level commands) and optionally a
``register_bench(bench_subparsers)`` function (``gigaseg bench <name>``). A subcommand
sets ``func`` to its runner. Heavy imports (torch, tifffile, ...) happen inside the
runners so that ``gigaseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any

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
        print(f"gigaseg {args.command}: error: {show_flags(str(exc), _command_of(parser, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gigaseg {args.command}: interrupted", file=sys.stderr)
        return 130


# NOTE [Parameters and flags]
# Library messages name the Python parameter that fixes a problem between backquotes, alone or
# with a value: `out_dir`, `memory_budget='600MiB'`, `overwrite=True` (gigaseg.errors). The
# command prints each as the option of the running subcommand that sets that parameter, found
# among the parser's own actions: the option whose dest is the parameter's name
# (--memory-budget 600MiB, --overwrite; --no-progress for `progress=False`), or one that
# declares with `feeds` the parameter it is passed to under another name (predict's --out
# becomes predict_slides' out_dir). A parameter that no option of the subcommand sets stays
# as the library wrote it. There is no table of flags besides the parser.

_PARAM = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]*))?`")


def feeds(parser: argparse.ArgumentParser, **params: str | tuple[str, ...]) -> None:
    """Declare the library parameters that options of ``parser`` are passed to under other
    names, for messages: ``feeds(p, out="out_dir")`` (option dest -> parameter name or names)."""
    actions = {a.dest: a for a in parser._actions}
    for dest, names in params.items():
        if dest not in actions:
            raise ValueError(f"{parser.prog} has no option with dest {dest!r}")
        action: Any = actions[dest]  # an attribute of ours on argparse's object
        action.gigaseg_params = (names,) if isinstance(names, str) else tuple(names)


# NOTE [Option values]
# A numeric option is read by its rule in gigaseg.options.NUMBER_OPTIONS (finite, of a kind, in
# a range) as argparse's ``type=``: a bad value (--threshold 2, --mpp nan, --memory-budget junk)
# is a usage error, exit 2, that names the option, the value and the valid range, before any
# model is loaded or any slide read. The library functions check the same rules again (a
# ConfigError naming the parameter), for callers that do not come through the command line.
def number(param: str) -> Callable[[str], int | float]:
    """An argparse ``type=`` reading the numeric option of library parameter ``param``."""
    from ..options import NUMBER_OPTIONS

    rule = NUMBER_OPTIONS[param]

    def convert(text: str) -> int | float:
        try:
            return rule.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = param
    return convert


def memory_size(text: str) -> str:
    """An argparse ``type=`` for a memory budget ("4GB", "2GiB", bytes; at least 256 MiB)."""
    from ..options import parse_memory_budget

    try:
        return parse_memory_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def command_parser(*command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand: ``command_parser("predict")``, ``command_parser("bench", "step")``."""
    parser = build_parser()
    for name in command:
        parser = _subparsers(parser).choices[name]
    return parser


def show_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with each `parameter` or `parameter=value` written as the option of ``parser``
    that sets it (see NOTE [Parameters and flags]); other text is unchanged."""
    by_name: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help") or isinstance(action, argparse._SubParsersAction):
            continue
        for name in (action.dest, *getattr(action, "gigaseg_params", ())):
            by_name.setdefault(name, action)

    def spell(m: re.Match) -> str:
        action = by_name.get(m.group(1))
        return m.group(0) if action is None else (_spell(action, m.group(2)) or m.group(0))

    return _PARAM.sub(spell, message)


def _spell(action: argparse.Action, value: str | None) -> str | None:
    """How the command line sets ``action``'s parameter to ``value`` (Python source, or None:
    only the option); None when no single option does."""
    if action.option_strings:
        flag = max(action.option_strings, key=len)
    else:  # a positional argument: its metavar
        flag = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if value is None:
        return flag
    try:
        v = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        v = value
    if action.nargs == 0:  # store_true, store_false, store_const
        return flag if v == action.const else None
    items = v if isinstance(v, (list, tuple)) else [v]
    text = " ".join(shlex.quote(str(x)) for x in items)
    return text if not action.option_strings else f"{flag} {text}"


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _command_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand that ``args`` ran (``gigaseg bench step``: bench's step)."""
    while (sub := _subparsers(parser)) is not None and getattr(args, sub.dest, None) in sub.choices:
        parser = sub.choices[getattr(args, sub.dest)]
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

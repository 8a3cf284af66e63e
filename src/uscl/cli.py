"""Command-line entry point: a thin layer over the Python API.

Subcommands live in :mod:`uscl.commands`, one module each, discovered here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import uscl.commands as command_package
from uscl import __version__
from uscl.errors import UsclError


def _command_modules():
    mods = []
    for info in sorted(pkgutil.iter_modules(command_package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"uscl.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 100))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with ``only``, the flags of that subcommand alone are
    added (the others are listed by name): building a command's flags may import torch, which
    `uscl --help` or `uscl synth` need not wait for."""
    parser = argparse.ArgumentParser(
        prog="uscl",
        description="Pretrain ultrasound image models on ultrasound videos (USCL).",
    )
    parser.add_argument("--version", action="version", version=f"uscl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == mod.NAME:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _flags=flag_names(p))
    return parser


def chosen_command(argv: list[str]) -> str:
    """The subcommand named in ``argv`` ("" when none is)."""
    return next((a for a in argv if not a.startswith("-")), "")


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name or dotted config key → the flag that sets it, for a subcommand's parser."""
    names = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    names.update(getattr(parser, "config_flag_names", {}))
    names.update({k.rsplit(".", 1)[-1]: v for k, v in getattr(parser, "config_flag_names", {}).items()
                  if k.rsplit(".", 1)[-1] not in names})
    return names


def with_flag(exc: UsclError, flags: dict[str, str]) -> str:
    """The library's message, plus the flag that sets the parameter it names."""
    msg = str(exc)
    flag = flags.get(getattr(exc, "param", None) or "")
    return f"{msg} (set with {flag})" if flag and flag not in msg else msg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=chosen_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsclError as exc:
        print(f"uscl {args.command}: error: {with_flag(exc, getattr(args, '_flags', {}))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"uscl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

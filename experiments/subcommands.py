"""Subcommand tables: name -> (module, help), each module a `configure`/`run` pair."""

from __future__ import annotations

import argparse
import importlib
import re


def add_subcommands(
    subparsers: argparse._SubParsersAction, table: dict[str, tuple[str, str]], dest: str
) -> None:
    """Adds one subparser per table entry; `dest` receives the module's `run`.

    A module that fails to import stops the command with its own error: a subcommand is
    never silently left out.
    """
    for name, (module_name, help_text) in table.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(**{dest: module.run, "_flags": option_strings(sub)})


def option_strings(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Every option string of `parser` and of its nested subcommands."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found |= option_strings(child)
    return frozenset(found)


def name_flag(message: str, flags: frozenset[str]) -> str:
    """Library errors name arguments (`s_min must ...`); on the command line, name the flag.

    A message that starts with an identifier whose flag (`--s-min`) the command has gets
    the flag in its place; any other message is returned unchanged.
    """
    match = re.match(r"([a-z][a-z0-9_]*)(?=[: ])", message)
    if match:
        flag = "--" + match.group(1).replace("_", "-")
        if flag in flags:
            return flag + message[match.end() :]
    return message

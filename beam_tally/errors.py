"""Errors the CLI turns into one-line messages (no Beam import, so the CLI starts quietly)."""

import argparse


class UsageError(Exception):
    """A bad command line: the message says what to do."""


class HelpRequested(Exception):
    """``--help``: the message is the help text, printed on stdout with exit status 0."""


class UsageParser(argparse.ArgumentParser):
    """An argparse parser whose errors are ``UsageError`` (one line, exit 2), not an exit."""

    def error(self, message):
        raise UsageError(message)


class FetchError(Exception):
    """An engine could not be fetched (its client failed or timed out): one line, exit 1."""


class _FlagsFormatter(argparse.HelpFormatter):
    """Each flag on its line with its meaning and, unless it is required or a switch, its
    default, so that every ``--help`` says what a flag does when it is left out."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return f"{text} (required)".strip()
        default = action.default
        switch = isinstance(action, argparse._StoreTrueAction)
        if (
            "(default" in text
            or switch
            or default is None
            or default == []
            or (default is argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


def flags_help(parser: argparse.ArgumentParser) -> str:
    """The flags of ``parser`` (hidden ones left out), one per line with meaning and default."""
    formatter = _FlagsFormatter(parser.prog)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        formatter.start_section(group.title)
        formatter.add_arguments(actions)
        formatter.end_section()
    return formatter.format_help().rstrip()

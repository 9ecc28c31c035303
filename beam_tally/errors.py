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

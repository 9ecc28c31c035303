"""Errors the CLI turns into one-line messages (no Beam import, so the CLI starts quietly)."""


class UsageError(Exception):
    """A bad command line: the message says what to do."""


class HelpRequested(Exception):
    """``--help``: the message is the help text, printed on stdout with exit status 0."""

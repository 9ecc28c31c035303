"""The one escaping helper for text that reaches a terminal (no Beam import).

Every string from input or a file name printed by the producer, the consumers, the errors and
the summaries passes ``escape_control``: C0 and C1 controls, DEL, and the Unicode bidirectional
controls that can reorder a line are shown as escapes (``\\x1b``, ``\\u202e``), so an input
cannot move the cursor, retitle the window or clear the screen. Lone surrogates (names that
are not valid Unicode) are escaped too, so printing never fails on them.
"""

import re

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escaped(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape_control(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(_escaped, text)


def say(*lines: str, file=None) -> None:
    """Prints ``lines`` escaped, one per line (stdout by default), flushed."""
    import sys

    out = sys.stdout if file is None else file
    for line in lines:
        out.write(escape_control(line) + "\n")
    out.flush()

"""Input paths and patterns (no Beam import: the producer uses them too).

Every command takes ``--input`` the same way (``input_pattern``): a file, a folder (the files
in it), or a glob.
"""

import glob
import os
import re

_MAGIC = re.compile(r"[*?[]")


def input_pattern(path: str) -> str:
    """A local ``--input`` made absolute (Beam's local filesystem matches nothing for a bare
    relative glob such as ``logs_*.json``); a folder becomes the pattern of the files in it;
    an existing file or folder is escaped, so ``access[1].log`` is that file, not
    ``access1.log``. Patterns with a scheme (``gs://``) are kept."""
    if "://" in path:
        return path
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return os.path.join(glob.escape(path), "*")
    return glob.escape(path) if os.path.lexists(path) else path


def watched_folder(path: str) -> str:
    """The folder an ``--input`` lists (absolute): the path itself when it names a folder (or
    ends with ``/``), else the folder above its first ``*``, ``?`` or ``[``, or above the file."""
    absolute = os.path.abspath(path)
    if path.endswith(("/", os.sep)) or os.path.isdir(absolute):
        return absolute
    magic = None if os.path.lexists(absolute) else _MAGIC.search(absolute)
    return os.path.dirname(absolute[: magic.start()] if magic else absolute)

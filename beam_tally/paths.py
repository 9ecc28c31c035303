"""Input paths and patterns (no Beam import: the producer uses them too)."""

import glob
import os


def input_pattern(path: str) -> str:
    """A local ``--input`` made absolute (Beam's local filesystem matches nothing for a bare
    relative glob such as ``logs_*.json``), and escaped when it names an existing file or folder
    literally, so ``access[1].log`` is that file, not ``access1.log``. Patterns with a scheme
    (``gs://``) are kept."""
    if "://" in path:
        return path
    path = os.path.abspath(path)
    return glob.escape(path) if os.path.lexists(path) else path

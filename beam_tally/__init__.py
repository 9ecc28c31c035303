"""beam-tally: log tallies and HTTP traffic monitoring as Apache Beam pipelines."""

__version__ = "0.1.0"

# Set by ``cli.entry``, the ``beam-tally`` command's own process (not by a test calling
# ``cli.main`` in-process): what only that process may do, such as forking a child for the
# report (``report.report_line_later``).
COMMAND_PROCESS = {"own": False}

"""beam-tally: log tallies and HTTP traffic monitoring as Apache Beam pipelines."""

__version__ = "0.1.0"

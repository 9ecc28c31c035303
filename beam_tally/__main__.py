import sys

from beam_tally.cli import entry

sys.exit(entry())

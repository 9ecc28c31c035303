import sys

from beam_tally.cli import main

sys.exit(main())

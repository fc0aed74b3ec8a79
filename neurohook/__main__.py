"""``python -m neurohook``: the command line (see :mod:`neurohook.cli`)."""

import sys

from neurohook.cli import main

sys.exit(main())

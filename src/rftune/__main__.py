"""``python -m rftune`` (and ``torchrun -m rftune``): the rftune command line."""

import sys

from rftune.cli import main

sys.exit(main())

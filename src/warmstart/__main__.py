"""`python -m warmstart ...` (also what `torchrun -m warmstart` runs)."""

import sys

from warmstart.cli import main

sys.exit(main())

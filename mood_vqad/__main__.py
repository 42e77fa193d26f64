"""`python -m mood_vqad` runs the command line (also under torchrun)."""

import sys

from mood_vqad.cli import main

sys.exit(main())

"""``python -m charex.cli``."""

import sys

from . import main

sys.exit(main())

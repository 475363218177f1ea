"""``python -m mlops_otel.cli``."""

import sys

from . import main

sys.exit(main())

"""``python -m components.evaluate``."""

import sys

from components.evaluate.job import main

sys.exit(main())

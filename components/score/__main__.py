"""``python -m components.score``."""

import sys

from components.score.job import main

sys.exit(main())

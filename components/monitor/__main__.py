"""``python -m components.monitor``."""

import sys

from components.monitor.job import main

sys.exit(main())

"""``python -m components.validate``."""

import sys

from components.validate.job import main

sys.exit(main())

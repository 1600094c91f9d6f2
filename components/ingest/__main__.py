"""``python -m components.ingest``."""

import sys

from components.ingest.job import main

sys.exit(main())

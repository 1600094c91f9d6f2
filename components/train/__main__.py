"""``python -m components.train`` (under torchrun for several processes)."""

import sys

from components.train.trainer import main

sys.exit(main())

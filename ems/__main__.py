"""``python -m ems``: the same as the ``ems`` console script."""

import sys

from ems.cli import main

sys.exit(main())

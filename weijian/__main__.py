"""``python -m weijian``: the same command line as the ``weijian`` script."""

import sys

from weijian.cli import main

sys.exit(main())

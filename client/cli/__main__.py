"""``python -m veil.cli``: the ``veil`` command."""

import sys

from veil.cli import main

sys.exit(main())

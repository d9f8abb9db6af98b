"""``python -m core`` is the ``conceptlens`` command."""

import sys

from core.cli import main

sys.exit(main())

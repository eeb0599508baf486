"""``python -m postclient`` is the ``postclient`` command."""

import sys

from .cli.main import main

sys.exit(main())

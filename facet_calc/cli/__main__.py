"""``python -m facet_calc.cli``: the ``facet-calc`` command."""

import sys

from . import main

sys.exit(main())

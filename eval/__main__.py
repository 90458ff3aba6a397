"""``python -m codedec_eval ...`` is ``codedec eval ...``."""

import sys

from codedec_eval.cli import main

sys.exit(main())

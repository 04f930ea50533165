"""`python -m py_engine`: the `py-engine` command (py_engine.cli)."""

import sys

from .cli import main

sys.exit(main())

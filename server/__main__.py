"""`python -m popin`: the same as the `popin` command."""

import sys

from .cli import main

sys.exit(main())

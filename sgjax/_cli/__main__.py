"""`python -m sgjax._cli ...`, the same as the `sgjax` command."""

import sys

from ._main import main


sys.exit(main())

"""python -m helpers.notebooks: regenerate (or --check, --list) the notebooks."""

import sys

from helpers.notebooks import main

sys.exit(main())

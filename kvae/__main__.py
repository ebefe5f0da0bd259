"""``python -m kvae``: the same as the ``kvae`` command."""

import sys

from kvae.cli import main

if __name__ == "__main__":
    sys.exit(main())

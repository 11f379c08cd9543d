"""``python -m splitsearch.cli``: the command line, as torchrun's ranks start it."""

import sys

from splitsearch.cli import main

if __name__ == "__main__":
    sys.exit(main())

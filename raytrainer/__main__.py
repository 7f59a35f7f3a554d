"""``python -m raytrainer``: the ``raytrainer`` command (see ``raytrainer.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

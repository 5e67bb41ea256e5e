"""``python -m tempest_gym.plot``: plot learning curves.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.plot` (console script ``tempest-plot``).
"""

import sys

from tempest_gym.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())

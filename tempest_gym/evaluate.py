"""``python -m tempest_gym.evaluate``: evaluate a player over whole games.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.evaluate` (console script ``tempest-evaluate``).
"""

import sys

from tempest_gym.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

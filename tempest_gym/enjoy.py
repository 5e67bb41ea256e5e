"""``python -m tempest_gym.enjoy``: watch a player.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.enjoy` (console script ``tempest-enjoy``).
"""

import sys

from tempest_gym.cli.enjoy import main

if __name__ == "__main__":
    sys.exit(main())

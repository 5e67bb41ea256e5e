"""``python -m tempest_gym.replay``: replay an action log.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.replay` (console script ``tempest-replay``).
"""

import sys

from tempest_gym.cli.replay import main

if __name__ == "__main__":
    sys.exit(main())

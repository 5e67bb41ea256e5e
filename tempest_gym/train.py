"""``python -m tempest_gym.train``: train an agent.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.train` (console script ``tempest-train``).
"""

import sys

from tempest_gym.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

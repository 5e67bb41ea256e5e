"""``python -m tempest_gym.client``: run MAME clients for a remote trainer.

Kept for existing commands; the tool is :mod:`tempest_gym.cli.client` (console script ``tempest-client``).
"""

import sys

from tempest_gym.cli.client import main

if __name__ == "__main__":
    sys.exit(main())

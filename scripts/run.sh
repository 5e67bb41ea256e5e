#!/usr/bin/env bash
# Set up (scripts/setup.sh) and train hybrid_dqn on N headless MAME instances, with a progress bar.
#   ./scripts/run.sh --rompath /path/to/roms [--num-envs 2] [-n 1000000] [any python -m tempest_gym.train flag]
# Logs, checkpoints and the final model go to logs/hybrid_dqn/TempestMAME-v0_<n>/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m tempest_gym.train --algo hybrid_dqn --env TempestMAME-v0 -P "$@"

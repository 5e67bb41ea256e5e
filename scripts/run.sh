#!/usr/bin/env bash
# Set up (scripts/setup.sh) and train hybrid_dqn on N headless MAME instances, with a progress bar, with the
# recipe that learns from the expert (zoo_configs/hybrid_dqn_dagger.yml, docs/results.md; 110 minutes on a quiet
# 2-core CPU, capped by --max-seconds 6300 plus the final updates so that a slower or shared machine still stays
# inside 2 hours; another -conf/--max-seconds given here wins).
#   ./scripts/run.sh --rompath /path/to/roms [--num-envs 2] [-n 620000] [any python -m tempest_gym.train flag]
# Logs, checkpoints and the final model go to logs/hybrid_dqn/TempestMAME-v0_<n>/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m tempest_gym.train --algo hybrid_dqn --env TempestMAME-v0 -P \
  -conf zoo_configs/hybrid_dqn_dagger.yml --max-seconds 6300 "$@"

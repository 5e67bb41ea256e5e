#!/usr/bin/env bash
# Set up tempest-gym on Debian/Ubuntu: MAME + LuaSocket from apt (if missing), a virtualenv in
# .venv, PyTorch's CPU wheel, and this package (editable, with test tools). Safe to re-run.
#   TORCH_SPEC    torch requirement to install (default torch==2.13.0)
#   TORCH_INDEX   extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu
#   EXTRAS        the package's extras to install (default test; CI: test,ray)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
apt_pkgs=()
if ! command -v mame >/dev/null 2>&1 && [ ! -x /usr/games/mame ]; then apt_pkgs+=(mame); fi
if ! dpkg -s lua-socket >/dev/null 2>&1; then apt_pkgs+=(lua-socket); fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then apt_pkgs+=(python3-venv); fi
if ((${#apt_pkgs[@]})); then
  echo "==> apt-get install ${apt_pkgs[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # install torch first and explicitly: a bare dependency on torch would pull a multi-GB CUDA build
  echo "==> installing ${TORCH_SPEC:-torch==2.13.0} (CPU)"
  extra=()
  if [ -n "${TORCH_INDEX:-}" ]; then extra=(--extra-index-url "$TORCH_INDEX"); fi
  "${pip[@]}" install "${TORCH_SPEC:-torch==2.13.0}" "${extra[@]}" 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
echo "==> installing tempest-gym"
"${pip[@]}" install -e ".[${EXTRAS:-test}]" 2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import tempest_gym, torch; print('tempest-gym', tempest_gym.__version__, '| torch', torch.__version__)"

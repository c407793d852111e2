#!/usr/bin/env bash
# Set up everything the tests need (setup.sh also fetches Fashion-MNIST once: a few tests use it),
# then run them. Extra arguments go to pytest:
#   bash scripts/test.sh                 # the full suite (what CI runs)
#   bash scripts/test.sh -k profiles     # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEPRUNE_EXTRAS="all,test" bash scripts/setup.sh
# The SSH test farm needs sshd, nftables and iproute2, the HTML report's test Chromium
# (root: installs them; else the farm falls back to an unprivileged sshd on loopback
# where it can, and the browser test skips).
if [ -f scripts/install-farm-deps.sh ]; then
  bash scripts/install-farm-deps.sh
fi
exec .venv/bin/python -m pytest "$@"

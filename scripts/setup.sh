#!/usr/bin/env bash
# Installs what EdgeQ needs to build and test, and nothing when it is all there.
# Debian packages: the C libraries EdgeQ links (libmosquitto, OpenBLAS, SQLite, zlib), the broker
# and its tools (tests start a real mosquitto), openssl (tests make TLS certificates).
# systemd-analyze (Debian package systemd, no recommends: nothing starts in a container) lets the
# tests verify deploy/edgeq@.service; dpkg-deb (always there on Debian) builds the .deb.
# Python packages (numpy, safetensors, paho-mqtt, cryptography, prometheus_client) serve the interop
# cross-checks in tests (cryptography: commands signed in Python verify in EdgeQ, and back;
# prometheus_client: its parser reads the gateway's /metrics).
# The Sparkplug B interop tests' peer (pysparkplug, which pins paho-mqtt < 2) gets a virtual
# environment of its own, .venv-sparkplug/ in the checkout, so the two paho versions never meet.
# Uses sudo only when not root. Safe to run again: a second run costs well under a second.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_deb=()
for pkg in libmosquitto-dev mosquitto mosquitto-clients libopenblas-dev libsqlite3-dev zlib1g-dev openssl curl gcc make chromium-headless-shell python3-venv; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    need_deb+=("$pkg")
  fi
done
if [ "${#need_deb[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_deb[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_deb[@]}" >/dev/null
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "setup: installing Debian package systemd (for systemd-analyze)" >&2
  if [ "${#need_deb[@]}" -eq 0 ]; then $SUDO apt-get update -qq; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import numpy, safetensors, paho.mqtt, cryptography, prometheus_client' 2>/dev/null; then
  echo "setup: installing Python packages: numpy safetensors paho-mqtt cryptography prometheus_client" >&2
  "$PY" -m pip install -q numpy safetensors 'paho-mqtt>=2' cryptography prometheus_client 2>&1 | grep -v -i 'root user' >&2 || true
  "$PY" -c 'import numpy, safetensors, paho.mqtt, cryptography, prometheus_client'
fi

# The run report's browser test (scripts/report-browser-check.py): Debian's chromium-headless-shell
# (in the package list above, with python3-venv), driven by Playwright for Python in its own venv
# ($EDGEQ_BROWSER_VENV, default ~/.cache/edgeq/browser-venv); Playwright is pointed at the system
# browser and never downloads one.
VENV=${EDGEQ_BROWSER_VENV:-$HOME/.cache/edgeq/browser-venv}
if ! "$VENV/bin/python" -c 'import playwright.sync_api' 2>/dev/null; then
  echo "setup: installing Playwright for Python into $VENV (the browser is Debian's chromium-headless-shell)" >&2
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q playwright==1.65.2
  "$VENV/bin/python" -c 'import playwright.sync_api'
fi

# The Sparkplug B peer (Tests/EdgeQGatewayTests/python/sparkplug_peer.py): an independent
# implementation from PyPI, in its own virtual environment (it needs paho-mqtt < 2).
SPB_VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-sparkplug"
if ! "$SPB_VENV/bin/python" -c 'import pysparkplug' 2>/dev/null; then
  echo "setup: installing pysparkplug 0.6.1 into $SPB_VENV" >&2
  if ! "$PY" -m venv "$SPB_VENV" >/dev/null 2>&1; then
    # Debian's own python3 needs python3-venv (ensurepip) to make a virtual environment.
    rm -rf "$SPB_VENV"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv "$SPB_VENV"
  fi
  "$SPB_VENV/bin/python" -m pip install -q 'pysparkplug==0.6.1' 2>&1 | grep -v -i 'root user' >&2 || true
  "$SPB_VENV/bin/python" -c 'import pysparkplug'
fi

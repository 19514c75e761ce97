#!/usr/bin/env bash
# Start a Docker engine on this machine, for the device image (`make docker-image`) and its tests.
#
# Debian's docker.io, started the way a machine without a network to bridge needs it: no default bridge (its
# 172.17/16 would be a new private route), no iptables rules. Containers then run with --network none (the agent
# needs no network) and builds use --network host (pip reaches the package index as this host does).
# Idempotent: an engine that already answers is left alone. Root, or sudo.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-engine: apt-get install docker.io"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io >/dev/null
fi
if docker info >/dev/null 2>&1; then
    exit 0
fi
log=/var/log/zsq-dockerd.log
echo "docker-engine: starting dockerd (no bridge, no iptables; log $log)"
$SUDO sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false >$log 2>&1 &"
for _ in $(seq 90); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "docker-engine: dockerd did not answer within 90 s; last lines of $log:" >&2
tail -5 "$log" >&2 || true
exit 1

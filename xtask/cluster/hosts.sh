#!/bin/sh
# The test cluster of `cargo xtask cluster-test`: hosts tf-node1..N as network namespaces,
# each with a veth pair to a bridge in a fourth namespace (tf-switch), on the private subnet
# 10.251.0.0/24 that exists only inside these namespaces (no route to anything else).
#   hosts.sh up N       create the hosts (removes leftovers of an earlier run first)
#   hosts.sh down       remove everything `up` created (idempotent)
#   hosts.sh link NODE up|down   plug / unplug a host's cable at the switch
#   hosts.sh watch PID STATE     wait (at most 2 h) until PID is gone, then `down` if STATE/owner
#                       still names PID: cleans up after an xtask killed by a signal.
# Needs root and iproute2 (`ip netns`), util-linux (`unshare`).
set -eu

SWITCH=tf-switch
SUBNET_PREFIX=10.251.0
MAX_NODES=9

nodes_present() {
    ip netns list | awk '{print $1}' | grep -E '^tf-(node[1-9]|switch)$' || true
}

down() {
    for ns in $(nodes_present); do
        # Processes left inside (orted, ranks of a crashed run) would keep the namespace alive.
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    i=1
    while [ "$i" -le "$MAX_NODES" ]; do
        rm -rf "/etc/netns/tf-node$i"
        i=$((i + 1))
    done
    rmdir /etc/netns 2>/dev/null || true
}

up() {
    n=$1
    [ "$n" -ge 1 ] && [ "$n" -le "$MAX_NODES" ] || { echo "hosts.sh: 1..$MAX_NODES hosts" >&2; exit 2; }
    down
    ip netns add "$SWITCH"
    ip -n "$SWITCH" link set lo up
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
    hosts=$(mktemp)
    printf '127.0.0.1\tlocalhost\n' >"$hosts"
    i=1
    while [ "$i" -le "$n" ]; do
        printf '%s.%s\ttf-node%s\n' "$SUBNET_PREFIX" "$i" "$i" >>"$hosts"
        i=$((i + 1))
    done
    i=1
    while [ "$i" -le "$n" ]; do
        node=tf-node$i
        ip netns add "$node"
        ip -n "$node" link set lo up
        # The cable: eth0 in the host, tf-port$i on the switch.
        ip -n "$node" link add eth0 type veth peer name "tf-port$i" netns "$SWITCH"
        ip -n "$node" addr add "$SUBNET_PREFIX.$i/24" dev eth0
        ip -n "$node" link set eth0 up
        ip -n "$SWITCH" link set "tf-port$i" master br0
        ip -n "$SWITCH" link set "tf-port$i" up
        # A lost peer is noticed in seconds, not after TCP's 15 minutes of retransmissions.
        ip netns exec "$node" sh -c 'echo 5 >/proc/sys/net/ipv4/tcp_retries2' 2>/dev/null || true
        # `ip netns exec` bind-mounts /etc/netns/<name>/hosts over /etc/hosts.
        mkdir -p "/etc/netns/$node"
        cp "$hosts" "/etc/netns/$node/hosts"
        i=$((i + 1))
    done
    rm -f "$hosts"
    # Every cable is up at both ends before anything runs (bounded: 50 x 0.1 s).
    i=1
    while [ "$i" -le "$n" ]; do
        tries=0
        until ip -n "tf-node$i" link show eth0 | grep -q LOWER_UP \
            && ip -n "$SWITCH" link show "tf-port$i" | grep -q 'state UP'; do
            tries=$((tries + 1))
            [ "$tries" -lt 50 ] || { echo "hosts.sh: the link of tf-node$i does not come up" >&2; exit 1; }
            sleep 0.1
        done
        i=$((i + 1))
    done
}

link() {
    node=$1
    state=$2
    case "$node" in tf-node[1-9]) ;; *) echo "hosts.sh: no host $node" >&2; exit 2 ;; esac
    case "$state" in up|down) ;; *) echo "hosts.sh: link state up or down" >&2; exit 2 ;; esac
    ip -n "$SWITCH" link set "tf-port${node#tf-node}" "$state"
}

watch() {
    pid=$1
    state=$2
    trap '' INT TERM HUP
    ticks=0
    while kill -0 "$pid" 2>/dev/null && [ "$ticks" -lt 7200 ]; do
        sleep 1
        ticks=$((ticks + 1))
    done
    if [ -f "$state/owner" ] && [ "$(cat "$state/owner")" = "$pid" ]; then
        down
        rm -rf "$state"
    fi
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    link) link "${2:-}" "${3:-}" ;;
    watch) watch "${2:?pid}" "${3:?state dir}" ;;
    *) echo "usage: hosts.sh up N | down | link NODE up|down | watch PID STATE" >&2; exit 2 ;;
esac

#!/bin/sh
# Open MPI rsh agent of `cargo xtask cluster-test` (plm_rsh_agent): runs a command "on a host"
# of the test cluster, i.e. inside the network namespace tf-nodeN, under that host's own name
# (a UTS namespace whose hostname is tf-nodeN, so MPI_Get_processor_name names the host).
# Open MPI calls it like ssh: `rsh-agent.sh [ssh options] HOST COMMAND...`, where COMMAND is
# shell text (ssh would hand it to the remote shell), so it is run with `sh -c`.
set -eu
while [ "$#" -gt 0 ]; do
    case "$1" in
        # ssh options that take a value.
        -b|-c|-D|-E|-e|-F|-I|-i|-J|-L|-l|-m|-O|-o|-p|-Q|-R|-S|-W|-w)
            [ "$#" -ge 2 ] || { echo "rsh-agent.sh: $1 needs a value" >&2; exit 255; }
            shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ "$#" -ge 2 ] || { echo "rsh-agent.sh: usage: rsh-agent.sh [options] HOST COMMAND..." >&2; exit 255; }
host=$1
shift
case "$host" in
    tf-node[1-9]) node=$host ;;
    10.251.0.[1-9]) node=tf-node${host##*.} ;;
    *) echo "rsh-agent.sh: $host is not a host of the test cluster (tf-node1..9)" >&2; exit 255 ;;
esac
ip netns list | grep -q "^$node\b" || { echo "rsh-agent.sh: host $node is down (no namespace $node)" >&2; exit 255; }
exec ip netns exec "$node" unshare --uts sh -c 'hostname "$0" && exec sh -c "$*"' "$node" "$*"

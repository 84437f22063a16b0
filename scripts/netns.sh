#!/usr/bin/env bash
# netns.sh up NAME [NET] | down NAME — the veth pair of lib-netns.sh from a shell.
set -euo pipefail
# shellcheck source=scripts/lib-netns.sh
source "$(dirname "$0")/lib-netns.sh"
case ${1:-} in
  up)
    netns_up "${2:?usage: netns.sh up NAME [NET]}" "${3:-7}"
    echo "shunt side:  ip netns exec $NETNS_SHUNT ...   NIC $NETNS_SHUNT_IF, use --ip $NETNS_SHUNT_IP/$NETNS_PREFIX"
    echo "kernel side: ip netns exec $NETNS_KERNEL ...  $NETNS_KERNEL_IF = $NETNS_KERNEL_IP/$NETNS_PREFIX"
    ;;
  down) netns_down "${2:?usage: netns.sh down NAME}" ;;
  *)
    echo "usage: netns.sh up NAME [NET] | down NAME" >&2
    exit 2
    ;;
esac

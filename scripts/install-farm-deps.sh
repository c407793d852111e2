#!/bin/sh
# Install what the SSH test farm (tests/farm) needs: sshd, nft, ip/tc, unshare/nsenter, ssh-keygen.
# Idempotent: a quick no-op when everything is present. Needs root (apt-get) to install;
# without root it only reports what is missing and exits 0 (farm tests then skip, or fall
# back to a loopback sshd where openssh-server is present).
set -eu

missing=""
need() { # need PROGRAM PACKAGE
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ] && [ ! -x "/sbin/$1" ]; then
        case " $missing " in *" $2 "*) ;; *) missing="$missing $2" ;; esac
    fi
}
need sshd openssh-server
need ssh-keygen openssh-client
need nft nftables
need ip iproute2
need tc iproute2
need unshare util-linux
need nsenter util-linux

if [ -z "$missing" ]; then
    echo "farm dependencies: all present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    # Not an error: farm tests skip (or fall back to a loopback sshd) without them.
    echo "farm dependencies missing:$missing (run this script as root to install them)" >&2
    exit 0
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Do not let the package start a system-wide sshd: the farm starts its own, in namespaces.
cleanup=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    cleanup=/usr/sbin/policy-rc.d
fi
trap '[ -n "$cleanup" ] && rm -f "$cleanup"' EXIT
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
}
mkdir -p /run/sshd
echo "farm dependencies: installed$missing"

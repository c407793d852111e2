#!/bin/sh
# Install what the SSH test farm (tests/farm) needs: sshd, nft, ip/tc, unshare/nsenter, ssh-keygen;
# and headless Chromium, which opens the deploy's HTML report (tests/test_deploy_report_chromium.py).
# Idempotent: a quick no-op when everything is present. Needs root (apt-get) to install;
# without root it only reports what is missing and exits 0 (farm tests then skip, or fall
# back to a loopback sshd where openssh-server is present; the browser test skips).
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
# Debian's package is "chromium"; some systems name the program chromium-browser. The page's
# font (DejaVu Sans) comes with it, so screenshots look the same everywhere.
browser=""
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    browser="chromium fonts-dejavu-core"
fi

if [ -z "$missing" ] && [ -z "$browser" ]; then
    echo "farm dependencies: all present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    # Not an error: farm tests skip (or fall back to a loopback sshd) without them.
    echo "farm dependencies missing:$missing${browser:+ $browser} (run this script as root to install them)" >&2
    exit 0
fi
echo "installing:$missing${browser:+ $browser}"
export DEBIAN_FRONTEND=noninteractive
updated=""
apt_install() { # apt_install PACKAGE...: quietly; refreshes the package lists once if the first try fails
    apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    if [ -z "$updated" ]; then
        apt-get update -q >/dev/null || return 1
        updated=1
    fi
    apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
# Do not let the package start a system-wide sshd: the farm starts its own, in namespaces.
cleanup=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    cleanup=/usr/sbin/policy-rc.d
fi
trap '[ -n "$cleanup" ] && rm -f "$cleanup"' EXIT
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt_install $missing
    mkdir -p /run/sshd
fi
if [ -n "$browser" ]; then
    # Not fatal: where apt has no chromium (Ubuntu ships it as a snap) the browser test skips.
    # shellcheck disable=SC2086
    if apt_install $browser; then
        missing="$missing $browser"
    else
        echo "chromium: apt-get could not install it (the browser test skips)" >&2
    fi
fi
echo "farm dependencies: installed$missing"

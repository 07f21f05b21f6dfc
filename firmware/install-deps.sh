#!/bin/sh
# Install the Debian packages needed to build rigctl and run it in simavr.
# Idempotent: runs apt-get only when a package is missing, so it is fast when
# everything is already installed. Needs root (or sudo) on Debian 12.
set -eu

PKGS="gcc-avr binutils-avr avr-libc arduino-core-avr libsimavr-dev simavr pkg-config libelf-dev make libc6-dev gcc g++ avrdude"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all firmware packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $missing

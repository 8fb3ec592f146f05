#!/usr/bin/env bash
# Installs the Debian packages of an unpacked air-gapped bundle (`scripts/bundle.sh --with-debs`)
# with `dpkg -i`, offline: cmake, g++, make, python3, ffmpeg, rustc-web and cargo-web (Debian 12's
# Rust 1.9x, as /usr/bin/rustc and /usr/bin/cargo) and all they depend on.
#
# Each .deb is first checked against the bundle's SHA256SUMS. A package already installed at the
# bundle's version or a newer one is left alone, so a box newer than the bundle is never
# downgraded; the rest go to one `dpkg -i`. Run as root, from the unpacked bundle:
#
#   scripts/install-debs.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
debs="$root/bundle/debs"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'install-debs: %s\n' "$*" >&2; exit 1; }

[ -d "$debs" ] || fail "no $debs: this bundle was made without --with-debs"
[ "$(id -u)" = 0 ] || fail "dpkg -i needs root"
command -v dpkg >/dev/null || fail "dpkg not found: these are Debian 12 packages"

listed="$(grep -F '  bundle/debs/' "$root/SHA256SUMS" || true)"
[ -n "$listed" ] || fail "SHA256SUMS lists no bundle/debs/ files"
cmp -s <(printf '%s\n' "$listed" | cut -c67- | LC_ALL=C sort) <(cd "$root" && find bundle/debs -type f | LC_ALL=C sort) ||
    fail "refusing: the files under bundle/debs/ are not the ones SHA256SUMS lists"
bad="$(cd "$root" && printf '%s\n' "$listed" | sha256sum -c --quiet 2>&1)" ||
    fail "refusing: a package does not match its checksum in SHA256SUMS:
$bad"

# The bundle's packages not yet installed at their version or a newer one, in $todo.
pending() {
    todo=() all=0
    local deb pkg version arch query have
    for deb in "$debs"/*.deb; do
        all=$((all + 1))
        read -r pkg version arch < <(dpkg-deb --showformat='${Package} ${Version} ${Architecture}\n' -W "$deb")
        query=$pkg
        [ "$arch" = all ] || query="$pkg:$arch"
        have="$(dpkg-query -W --showformat='${db:Status-Status} ${Version}' "$query" 2>/dev/null || true)"
        if [ "${have%% *}" = installed ] && dpkg --compare-versions "${have#* }" ge "$version"; then
            continue
        fi
        todo+=("$deb")
    done
}

pending
if [ ${#todo[@]} -eq 0 ]; then
    say "all $all packages of the bundle are installed already (at its versions or newer)"
    exit 0
fi
say "dpkg -i ${#todo[@]} of the bundle's $all packages (the rest are installed already); no network is used"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
# One dpkg -i orders unpacking and configuring, but refuses to unpack a package whose
# pre-dependency is only unpacked in the same call (python3-minimal, for one): a second pass
# takes those, now that their pre-dependencies are configured.
for pass in 1 2 3; do
    dpkg -i "${todo[@]}" >>"$log" 2>&1 || true
    dpkg --configure -a >>"$log" 2>&1 || true
    pending
    [ ${#todo[@]} -gt 0 ] || break
    [ "$pass" -lt 3 ] || {
        tail -n 30 "$log" >&2
        fail "after 3 passes of dpkg -i, ${#todo[@]} packages are still not installed; the whole log is $log"
    }
done
rm -f "$log"
for tool in cmake g++ make python3 ffmpeg cargo rustc; do
    command -v "$tool" >/dev/null || fail "$tool is still missing after dpkg -i"
done
say "installed: cmake, g++, make, python3, ffmpeg, rustc and cargo $(rustc --version | cut -d' ' -f2) (dpkg -i, $pass pass(es))"

#!/usr/bin/env bash
# Proves the air-gapped bundle end to end (README, "Air-gapped install"); .ci/run runs it. As root:
#
#   scripts/test-bundle.sh [ARCHIVE]
#
# 1. Makes the bundle with scripts/bundle.sh --with-binaries (or takes ARCHIVE, made so), after
#    checking that a bundle without options made here and one made from a fresh clone in another
#    directory are the same bytes.
# 2. Tamper: in a fresh unpack, a changed vendored crate file, PyPI sdist and prebuilt
#    whisper-server are each refused by their checksum (sha256sum -c SHA256SUMS, cargo,
#    scripts/setup-whisper.sh), even when SHA256SUMS is rewritten to match.
# 3. Offline: in a network namespace with no interface but loopback (unshare -n), with HOME,
#    CARGO_HOME and the XDG directories empty (RUSTUP_HOME kept, so the toolchain is found; no
#    pip cache), unpacks the bundle into a fresh directory and runs the README's commands:
#    sha256sum -c, cargo build --release --offline --frozen, cargo run --release -- --version,
#    cargo test --offline (every test that needs no outside tool: the others are ignored),
#    scripts/setup-whisper.sh (which must say it makes no network call), then starts the service
#    and transcribes jfk.wav word for word.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
JFK="and so my fellow americans ask not what your country can do for you ask what you can do for your country"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'test-bundle: FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf -- '--> %s\n' "$*"; }
# Runs a command, printing its time.
timed() {
    local t0=$SECONDS
    "$@"
    printf '    (%d s)\n' $((SECONDS - t0))
}

# ---------------------------------------------------------------------------------------------
# Inside the namespace (this script calls itself with --inside ...).

loopback_only() {
    ip link set lo up
    local others
    others="$(ip -o link show | grep -v ': lo:' || true)"
    [ -z "$others" ] || fail "a network interface besides loopback: $others"
}

unpack() { # archive into-dir; prints the unpacked directory
    mkdir -p "$2"
    tar -xzf "$1" -C "$2"
    local dirs=("$2"/inference-server-manager-*)
    [ ${#dirs[@]} -eq 1 ] && [ -d "${dirs[0]}" ] || fail "the archive does not unpack to one inference-server-manager-<version> directory"
    echo "${dirs[0]}"
}

# The pids whose parent is the given one (from /proc: ps is not on a bare box).
children_of() {
    local status
    for status in /proc/[0-9]*/status; do
        awk -v parent="$1" '/^Pid:/ { pid = $2 } /^PPid:/ && $2 == parent { printf "%s ", pid }' "$status" 2>/dev/null || true
    done
}

# Expects the command to fail with output matching the pattern.
refused() { # pattern command...
    local pattern=$1 out
    shift
    if out="$("$@" 2>&1)"; then
        fail "not refused: $*"
    fi
    grep -qE "$pattern" <<<"$out" || fail "refused, but not for the expected reason ($pattern): $* said:
$(tail -n 20 <<<"$out")"
    printf '    refused, as it should be: %s\n' "$(grep -E "$pattern" <<<"$out" | head -n 1 | cut -c1-160)"
}

inside_tamper() {
    local archive=$1 box=$2 dir
    loopback_only
    dir="$(unpack "$archive" "$box/tamper")"
    cd "$dir"
    sha256sum -c --quiet SHA256SUMS || fail "the untouched bundle does not verify"
    mkdir -p "$box/orig"

    local crate=vendor/serde_json/src/lib.rs
    step "a vendored crate file changed: $crate"
    cp "$crate" "$box/orig/crate"
    printf '\n// tampered\n' >>"$crate"
    refused "$crate: FAILED" sha256sum -c --quiet SHA256SUMS
    refused "checksum.*serde_json" cargo build --release --offline --frozen
    cp "$box/orig/crate" "$crate"

    local sdist=bundle/pypi/pywhispercpp-1.5.1.tar.gz
    step "the PyPI sdist changed (one byte): $sdist"
    cp "$sdist" "$box/orig/sdist"
    printf 'X' | dd of="$sdist" bs=1 seek=4096 conv=notrunc status=none
    refused "$sdist: FAILED" sha256sum -c --quiet SHA256SUMS
    refused "$sdist: FAILED" scripts/setup-whisper.sh
    step "... and SHA256SUMS rewritten to match it: the checksum pinned in setup-whisper.sh still refuses it"
    cp SHA256SUMS "$box/orig/sums"
    sed -i "s|^[0-9a-f]*  $sdist\$|$(sha256sum "$sdist" | cut -d' ' -f1)  $sdist|" SHA256SUMS
    sha256sum -c --quiet SHA256SUMS || fail "SHA256SUMS was not rewritten"
    refused "refusing $sdist: its checksum is not the pinned" scripts/setup-whisper.sh
    cp "$box/orig/sums" SHA256SUMS
    cp "$box/orig/sdist" "$sdist"

    if [ -f bundle/whisper/whisper-server ]; then
        local server=bundle/whisper/whisper-server
        step "the prebuilt whisper-server changed: $server"
        cp "$server" "$box/orig/server"
        printf 'X' >>"$server"
        refused "$server: FAILED" scripts/setup-whisper.sh
        cp "$box/orig/server" "$server"
    fi
    [ ! -e "$XDG_DATA_HOME/transcription_manager/whisper/whisper-server" ] || fail "a refused bundle installed a whisper-server"
    sha256sum -c --quiet SHA256SUMS || fail "the restored bundle does not verify"
}

inside_offline() {
    local archive=$1 box=$2 dir
    loopback_only
    step "unpack into a fresh directory"
    dir="$(unpack "$archive" "$box/unpack")"
    cd "$dir"
    echo "    $dir: $(du -sh . | cut -f1)"

    step "sha256sum -c SHA256SUMS"
    timed sha256sum -c --quiet SHA256SUMS

    step "cargo build --release --offline --frozen (CARGO_HOME empty: every crate from vendor/)"
    timed cargo build --release --offline --frozen --quiet
    step "cargo run --release -- --version (the README's line as it is)"
    cargo run --release --quiet -- --version

    step "cargo test --offline"
    local log="$box/cargo-test.log" status t0=$SECONDS
    set +e
    cargo test --offline >"$log" 2>&1
    status=$?
    set -e
    grep -E '^test result:' "$log" | sort | uniq -c | sed 's/^ */    /'
    awk '/^test result:/ { passed += $4; failed += $6 } END { printf "    cargo test --offline: %d passed, %d failed", passed, failed }' "$log"
    printf ' (%d s)\n' $((SECONDS - t0))
    if [ "$status" != 0 ]; then
        tail -n 60 "$log"
        fail "cargo test --offline failed"
    fi

    step "scripts/setup-whisper.sh"
    local out
    out="$(scripts/setup-whisper.sh 2>&1)" || { echo "$out"; fail "setup-whisper.sh failed"; }
    sed 's/^/    /' <<<"$out"
    grep -q "no network call is made" <<<"$out" || fail "setup-whisper.sh did not say it makes no network call"
    ! grep -qiE "downloading|apt-get install" <<<"$out" || fail "setup-whisper.sh reached for the network"

    serve_and_transcribe "$box"
}

serve_and_transcribe() { # box; in the unpacked bundle, after setup-whisper.sh
    local box=$1
    step "serve (default settings, written on first run) and transcribe jfk.wav"
    local port=3141 pid
    target/release/inference-server-manager serve --port "$port" >"$box/serve.log" 2>&1 &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null || true' EXIT
    local t0=$SECONDS
    until python3 - "$port" <<'EOF' 2>/dev/null; do
import json, sys, urllib.request
body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2))
sys.exit(0 if body["pool"]["healthyWorkers"] == body["pool"]["totalWorkers"] > 0 else 1)
EOF
        kill -0 "$pid" 2>/dev/null || { cat "$box/serve.log"; fail "the service exited"; }
        [ $((SECONDS - t0)) -lt 60 ] || { cat "$box/serve.log"; fail "no healthy pool after 60 s"; }
        sleep 0.2
    done
    echo "    pool healthy after $((SECONDS - t0)) s"
    python3 - "$port" "$XDG_DATA_HOME/transcription_manager/whisper/jfk.wav" "$JFK" <<'EOF' || fail "jfk.wav was not transcribed word for word"
import base64, json, re, sys, time, urllib.request
port, wav, expected = sys.argv[1], sys.argv[2], sys.argv[3]
content = base64.b64encode(open(wav, "rb").read()).decode()
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/transcriptions",
    data=json.dumps({"content": content, "language": "en", "timestamps": False}).encode(),
    headers={"Content-Type": "application/json"})
t0 = time.monotonic()
body = json.load(urllib.request.urlopen(request, timeout=120))
text = body["result"]["text"]
print(f"    {time.monotonic() - t0:.1f} s: {text.strip()}")
words = re.sub(r"[^a-z ]", "", text.lower()).split()
sys.exit(0 if words == expected.split() else 1)
EOF
    local workers
    workers="$(children_of "$pid")"
    kill -TERM "$pid"
    wait "$pid" || fail "the service did not exit 0 on SIGTERM"
    trap - EXIT
    for worker in $workers; do
        ! kill -0 "$worker" 2>/dev/null || fail "worker $worker outlived the service"
    done
    echo "    stopped (SIGTERM); its workers ($workers) are gone"
}

# A bare Debian 12 (debootstrap --variant=minbase) with the --with-debs bundle: everything from
# the bundle, Rust included (Debian's rustc-web and cargo-web).
inside_bare() {
    local archive=$1 box=$2 dir
    step "unpack into a fresh directory"
    dir="$(unpack "$archive" "$box/unpack")"
    cd "$dir"
    for tool in cmake g++ make python3 ffmpeg cargo rustc; do
        ! command -v "$tool" >/dev/null || fail "$tool is already here: not a bare box"
    done
    step "sha256sum -c SHA256SUMS"
    sha256sum -c --quiet SHA256SUMS
    step "scripts/install-debs.sh"
    timed scripts/install-debs.sh
    ffmpeg -hide_banner -version | head -n 1 | sed 's/^/    /'
    step "cargo build --release --offline --frozen (Debian's $(cargo --version))"
    timed cargo build --release --offline --frozen --quiet
    step "cargo test --offline"
    local log="$box/cargo-test.log" status t0=$SECONDS
    set +e
    cargo test --offline >"$log" 2>&1
    status=$?
    set -e
    awk '/^test result:/ { passed += $4; failed += $6 } END { printf "    cargo test --offline: %d passed, %d failed", passed, failed }' "$log"
    printf ' (%d s)\n' $((SECONDS - t0))
    if [ "$status" != 0 ]; then
        grep -E '^test .*FAILED|panicked' "$log" | head -n 20
        fail "cargo test --offline failed on the bare box"
    fi
    step "scripts/setup-whisper.sh --build (tuned for this CPU, from the bundled source)"
    local out t1=$SECONDS
    out="$(scripts/setup-whisper.sh --build 2>&1)" || { echo "$out"; fail "setup-whisper.sh --build failed"; }
    sed 's/^/    /' <<<"$out"
    printf '    (%d s)\n' $((SECONDS - t1))
    grep -q "no network call is made" <<<"$out" || fail "setup-whisper.sh did not say it makes no network call"
    serve_and_transcribe "$box"
}

if [ "${1:-}" = --inside ]; then
    "inside_$2" "$3" "$4"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Outside: make the bundle, then run each part in its own empty world with no network.

[ "$(id -u)" = 0 ] || fail "run as root (unshare -n)"
unshare -n true 2>/dev/null || fail "unshare -n does not work here"
command -v python3 >/dev/null || fail "python3 is needed (the HTTP checks)"
started=$SECONDS

if [ "${1:-}" = --bare ]; then
    # By hand, not in CI: scripts/test-bundle.sh --bare ROOTFS ARCHIVE, with ROOTFS a fresh
    # `debootstrap --variant=minbase bookworm ROOTFS` and ARCHIVE made with --with-debs.
    [ $# -eq 3 ] || fail "usage: scripts/test-bundle.sh --bare ROOTFS ARCHIVE"
    rootfs="$(cd "$2" && pwd)"
    [ -x "$rootfs/usr/bin/dpkg" ] || fail "$rootfs is not a Debian root file system"
    mkdir -p "$rootfs/root/bundle-test"
    box="$(mktemp -d "$rootfs/root/bundle-test/box.XXXXXX")"
    cp "$3" "$box/bundle.tar.gz"
    cp "$repo/scripts/test-bundle.sh" "$box/test-bundle.sh"
    inner="${box#"$rootfs"}"
    say "a bare Debian 12 ($(cat "$rootfs/etc/debian_version")) with no network: install, build, test and serve from $(basename "$3")"
    t0=$SECONDS
    unshare -n -m --propagation private -- bash -c '
        set -e
        ip link set lo up
        mount -t proc proc "$1/proc"
        mount --rbind /dev "$1/dev"
        mount -t tmpfs tmpfs "$1/tmp"
        exec chroot "$1" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 CARGO_TERM_COLOR=never TMPDIR=/tmp \
            XDG_CONFIG_HOME="$2/config" XDG_DATA_HOME="$2/data" \
            bash "$2/test-bundle.sh" --inside bare "$2/bundle.tar.gz" "$2"' _ "$rootfs" "$inner"
    say "bare Debian 12 proven in $((SECONDS - t0)) s"
    exit 0
fi

if [ $# -ge 1 ]; then
    archive="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
    say "reproducible: the bundle made here and one made from a fresh clone elsewhere are the same bytes"
    scratch="$(mktemp -d /tmp/ism-bundle-clone.XXXXXX)"
    git clone -q "$repo" "$scratch/clone"
    git -C "$scratch/clone" checkout -q "$(git rev-parse HEAD)"
    (cd "$scratch/clone" && scripts/bundle.sh >/dev/null) || fail "bundle.sh failed in the clone"
    scripts/bundle.sh >/dev/null || fail "bundle.sh failed"
    here_sum="$(cut -d' ' -f1 dist/inference-server-manager-*-bundle.tar.gz.sha256)"
    there_sum="$(cut -d' ' -f1 "$scratch"/clone/dist/inference-server-manager-*-bundle.tar.gz.sha256)"
    rm -rf "$scratch"
    [ "$here_sum" = "$there_sum" ] || fail "two bundles of the same commit differ: $here_sum here, $there_sum from the clone"
    echo "    both $here_sum"
    say "scripts/bundle.sh --with-binaries"
    timed scripts/bundle.sh --with-binaries
    archive="$repo/dist/inference-server-manager-$(git show HEAD:Cargo.toml | sed -n 's/^version = "\(.*\)"$/\1/p' | head -n 1)-bundle.tar.gz"
    (cd dist && sha256sum -c --quiet "$(basename "$archive").sha256") || fail "the archive does not match its .sha256"
fi
[ -f "$archive" ] || fail "no archive $archive"

# The empty world: fresh HOME, CARGO_HOME and XDG dirs; the toolchain through RUSTUP_HOME.
cargo_bin="$(dirname "$(command -v cargo)")"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
in_empty_world() { # part
    local box
    box="$(mktemp -d /tmp/ism-bundle-test.XXXXXX)"
    mkdir -p "$box"/{home,cargo,config,data,cache,state,runtime}
    chmod 700 "$box/runtime"
    local status=0
    unshare -n -- env -i \
        PATH="$cargo_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME="$box/home" CARGO_HOME="$box/cargo" RUSTUP_HOME="$RUSTUP_HOME" \
        ${RUSTUP_TOOLCHAIN:+RUSTUP_TOOLCHAIN="$RUSTUP_TOOLCHAIN"} \
        XDG_CONFIG_HOME="$box/config" XDG_DATA_HOME="$box/data" XDG_CACHE_HOME="$box/cache" \
        XDG_STATE_HOME="$box/state" XDG_RUNTIME_DIR="$box/runtime" \
        PIP_NO_CACHE_DIR=1 CARGO_TERM_COLOR=never LANG=C.UTF-8 TMPDIR="$box" \
        bash "$repo/scripts/test-bundle.sh" --inside "$1" "$archive" "$box" || status=$?
    rm -rf "$box"
    return "$status"
}

say "tampered files are refused (no network, empty HOME)"
timed in_empty_world tamper
say "offline build, test and service from the bundle (no network, empty HOME, CARGO_HOME and XDG dirs)"
timed in_empty_world offline
say "bundle proven in $((SECONDS - started)) s: $(basename "$archive"), $(du -h "$archive" | cut -f1)"

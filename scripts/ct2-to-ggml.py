#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (faster-whisper's model.bin) into a whisper.cpp ggml file.

whisper.cpp cannot read CTranslate2's format, and the only Whisper weights reachable from the
package registries are CTranslate2 ones. The two formats hold the same tensors:

- CTranslate2 `model.bin`: uint32 version, the spec name ("WhisperSpec"), uint32 revision, then
  variables as (name, rank, dims, dtype, byte count, data), then aliases. Names look like
  `encoder/layer_0/self_attention/linear_0/weight`; self-attention q/k/v are fused into one
  matrix, cross-attention k/v into another, and the k bias (which Whisper does not have) is a
  block of zeros inside the fused bias.
- whisper.cpp ggml: a header (magic, hyper-parameters, mel filters, vocabulary) followed by
  tensors as (n_dims, name length, type, dims innermost first, name, data) with names like
  `encoder.blocks.0.attn.query.weight`.

The header is taken verbatim from whisper.cpp's `for-tests-ggml-<model>.bin`, which is exactly
a header with no tensors; this script checks that its hyper-parameters match the weights (widths,
context lengths, head and layer counts, and the vocabulary size, which tells an English-only
model, 51864 tokens, from a multilingual one, 51865 tokens with 99 languages), then appends the
weights: matrices and convolution kernels in float16, vectors and positional embeddings in
float32, as whisper.cpp's loader expects. Any Whisper size converts the same way, given the
header of the same model (`for-tests-ggml-base.bin` for base, `...-tiny.en.bin` for tiny.en).

Usage: ct2-to-ggml.py MODEL.BIN FOR-TESTS-GGML.BIN OUTPUT.BIN
Standard library only.
"""

import struct
import sys

GGML_MAGIC = 0x67676D6C
CT2_FLOAT32, CT2_INT16, CT2_INT32, CT2_FLOAT16 = 0, 2, 3, 4
GGML_F32, GGML_F16 = 0, 1


class ConversionError(Exception):
    pass


def read_ct2(path):
    """Returns ({name: (dims, dtype, bytes)}, spec name) from a CTranslate2 model.bin."""
    with open(path, "rb") as f:
        data = f.read()
    at = 0

    def take(fmt):
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise ConversionError(f"{path}: truncated at byte {at}")
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values

    def string():
        nonlocal at
        (length,) = take("<H")
        raw = data[at : at + length]
        at += length
        if len(raw) != length or not raw.endswith(b"\0"):
            raise ConversionError(f"{path}: not a CTranslate2 model (bad string at byte {at})")
        return raw[:-1].decode("utf-8")

    (version,) = take("<I")
    if not 1 <= version <= 6:
        raise ConversionError(f"{path}: not a CTranslate2 model (binary version {version})")
    spec = string()
    if spec != "WhisperSpec":
        raise ConversionError(f"{path}: a CTranslate2 {spec} model, not a Whisper model")
    take("<I")  # revision
    (count,) = take("<I")
    variables = {}
    for _ in range(count):
        name = string()
        (rank,) = take("<B")
        dims = list(take(f"<{rank}I")) if rank else []
        (dtype,) = take("<B")
        (nbytes,) = take("<I")
        variables[name] = (dims, dtype, data[at : at + nbytes])
        at += nbytes
    return variables, spec


def read_header(path):
    """The ggml header bytes and its hyper-parameters, checked to hold no tensors."""
    with open(path, "rb") as f:
        header = f.read()
    (magic,) = struct.unpack_from("<I", header, 0)
    if magic != GGML_MAGIC:
        raise ConversionError(f"{path}: not a ggml file (magic {magic:#x})")
    names = ["n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
             "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype"]
    hparams = dict(zip(names, struct.unpack_from("<11i", header, 4)))
    n_mel, n_fft = struct.unpack_from("<2i", header, 48)
    at = 56 + n_mel * n_fft * 4
    (n_vocab,) = struct.unpack_from("<i", header, at)
    at += 4
    for _ in range(n_vocab):
        (length,) = struct.unpack_from("<I", header, at)
        at += 4 + length
    if at != len(header):
        raise ConversionError(f"{path}: expected a header without tensors ({len(header) - at} bytes follow the vocabulary)")
    if hparams["ftype"] != 1:
        raise ConversionError(f"{path}: header ftype {hparams['ftype']}, expected 1 (float16)")
    return header, hparams


def as_f32(dims, dtype, raw):
    if dtype == CT2_FLOAT32:
        return raw
    if dtype == CT2_FLOAT16:
        count = len(raw) // 2
        return struct.pack(f"<{count}f", *struct.unpack(f"<{count}e", raw))
    raise ConversionError(f"unsupported CTranslate2 dtype {dtype}")


def as_f16(dims, dtype, raw):
    if dtype == CT2_FLOAT16:
        return raw
    if dtype == CT2_FLOAT32:
        count = len(raw) // 4
        return struct.pack(f"<{count}e", *struct.unpack(f"<{count}f", raw))
    raise ConversionError(f"unsupported CTranslate2 dtype {dtype}")


def rows(dims, dtype, raw, start, stop):
    """Rows [start, stop) of a row-major matrix (or vector)."""
    width = 1
    for d in dims[1:]:
        width *= d
    item = 2 if dtype == CT2_FLOAT16 else 4
    return [stop - start] + dims[1:], dtype, raw[start * width * item : stop * width * item]


def tensor(name, dims, payload, ggml_type):
    """One ggml tensor record; `dims` are outermost first, ggml wants innermost first."""
    encoded = name.encode()
    ne = list(reversed(dims))
    return struct.pack(f"<3i{len(ne)}i", len(ne), len(encoded), ggml_type, *ne) + encoded + payload


def check(variables, hparams, get):
    """Refuses weights whose shapes do not match the header's hyper-parameters."""
    h = hparams
    audio, text = h["n_audio_state"], h["n_text_state"]
    shapes = [
        ("encoder/conv1/weight", [audio, h["n_mels"], 3]),
        ("encoder/conv2/weight", [audio, audio, 3]),
        ("encoder/position_encodings/encodings", [h["n_audio_ctx"], audio]),
        ("decoder/embeddings/weight", [h["n_vocab"], text]),
        ("decoder/position_encodings/encodings", [h["n_text_ctx"], text]),
    ]
    for name, wanted in shapes:
        dims = get(name)[0]
        if dims != wanted:
            hint = ""
            if name == "decoder/embeddings/weight" and dims[:1] != wanted[:1]:
                hint = (f" (a vocabulary of {dims[0]} tokens, the header has {h['n_vocab']}: "
                        "English-only models have 51864, multilingual ones 51865; use the header of the same model)")
            raise ConversionError(f"{name} is {dims}; the header wants {wanted}{hint}")
    for side, heads, layers in [("encoder", "n_audio_head", "n_audio_layer"), ("decoder", "n_text_head", "n_text_layer")]:
        _, dtype, raw = variables.get(f"{side}/num_heads", ([], None, b""))
        fmt = {CT2_INT16: "<h", CT2_INT32: "<i"}.get(dtype)
        if fmt and len(raw) == struct.calcsize(fmt) and struct.unpack(fmt, raw)[0] != h[heads]:
            raise ConversionError(f"{side}/num_heads is {struct.unpack(fmt, raw)[0]}; the header wants {h[heads]}")
        found = {part for name in variables if name.startswith(f"{side}/")
                 for part in name.split("/")[1:2] if part.startswith("layer_") and part[6:].isdigit()}
        if found != {f"layer_{i}" for i in range(h[layers])}:
            raise ConversionError(f"the {side} has {len(found)} layers; the header wants {h[layers]}")


def convert(variables, hparams):
    out = []

    def get(name):
        if name not in variables:
            raise ConversionError(f"the model has no variable {name}: not a Whisper model of this size")
        return variables[name]

    def vector(src, dst, dims=None):
        d, t, raw = get(src) if isinstance(src, str) else src
        out.append(tensor(dst, dims or d, as_f32(d, t, raw), GGML_F32))

    def matrix(src, dst):
        d, t, raw = get(src) if isinstance(src, str) else src
        out.append(tensor(dst, d, as_f16(d, t, raw), GGML_F16))

    def linear(src, dst, bias=True):
        matrix(f"{src}/weight", f"{dst}.weight")
        if bias:
            vector(f"{src}/bias", f"{dst}.bias")

    def fused(src, dsts):
        """Splits a fused projection into whisper.cpp's separate ones; k has no bias."""
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        n = weight[0][0] // len(dsts)
        for i, dst in enumerate(dsts):
            matrix(rows(*weight, i * n, (i + 1) * n), f"{dst}.weight")
            if not dst.endswith(".key"):
                vector(rows(*bias, i * n, (i + 1) * n), f"{dst}.bias")

    def norm(src, dst):
        vector(f"{src}/gamma", f"{dst}.weight")
        vector(f"{src}/beta", f"{dst}.bias")

    def block(src, dst, cross_attention):
        """One transformer layer: self-attention, cross-attention (decoder only), MLP."""
        norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        fused(f"{src}/self_attention/linear_0", [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        if cross_attention:
            norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
            fused(f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"])
            linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")

    check(variables, hparams, get)
    state = hparams["n_audio_state"]
    matrix("encoder/conv1/weight", "encoder.conv1.weight")
    vector("encoder/conv1/bias", "encoder.conv1.bias", [state, 1])
    matrix("encoder/conv2/weight", "encoder.conv2.weight")
    vector("encoder/conv2/bias", "encoder.conv2.bias", [state, 1])
    vector("encoder/position_encodings/encodings", "encoder.positional_embedding")
    for i in range(hparams["n_audio_layer"]):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross_attention=False)
    norm("encoder/layer_norm", "encoder.ln_post")

    matrix("decoder/embeddings/weight", "decoder.token_embedding.weight")
    vector("decoder/position_encodings/encodings", "decoder.positional_embedding")
    for i in range(hparams["n_text_layer"]):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross_attention=True)
    norm("decoder/layer_norm", "decoder.ln")
    return out


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    model, header_path, output = argv[1:]
    try:
        variables, _ = read_ct2(model)
        header, hparams = read_header(header_path)
        tensors = convert(variables, hparams)
    except (ConversionError, OSError, struct.error, UnicodeDecodeError) as e:
        print(f"ct2-to-ggml: {e}", file=sys.stderr)
        return 1
    with open(output + ".tmp", "wb") as f:
        f.write(header)
        for record in tensors:
            f.write(record)
    import os

    os.replace(output + ".tmp", output)
    print(f"ct2-to-ggml: wrote {output}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

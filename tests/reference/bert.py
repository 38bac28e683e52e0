#!/usr/bin/env python3
"""Independent numpy (float64) reference for all-MiniLM-L6-v2 sentence embeddings, as
sentence-transformers computes them with SentenceTransformer.encode(normalize_embeddings=True).

  bert.py tokens --data DIR STRINGS.json [--max-length N]
        JSON list of token id lists ([CLS] ... [SEP]), one per string
  bert.py embed --data DIR STRINGS.json [--weights FILE]
        JSON {"embedding": [[384 floats], ...], "token_ids": [[...], ...]}: the strings
        encoded as ONE batch (padded to the longest, padding masked)
  bert.py selftest --data DIR
        the published cosine example, unit norms, batch independence, the combined
        minilm.safetensors, tokenizer settings

DIR is the folder `bash models/data/fetch.sh minilm` writes (target/data/minilm):
model.safetensors, config.json, tokenizer.json (and minilm.safetensors). STRINGS.json is a
JSON list of strings; `-` reads it from standard input.

What is computed (BertModel, post-LayerNorm, as in transformers' modeling_bert):
  text -> str.strip() (sentence-transformers' Transformer.tokenize does this) -> the
  `tokenizers` Tokenizer of tokenizer.json with its padding OFF and truncation at 256 ids
  including [CLS]/[SEP] (sentence_bert_config.json max_seq_length; tokenizer.json itself
  says pad to a fixed 128 and truncate at 128, which sentence-transformers overrides)
  x = word_emb[ids] + pos_emb[0..L-1] + type_emb[0]; x = LayerNorm(x)
  6 x: q,k,v = x Wq^T + bq, ...; 12 heads of 32; scores = q k^T / sqrt(32) + mask
       (mask = 0 for real keys, a huge negative number for padding keys); softmax over keys;
       ctx = probs v, heads concatenated; x = LayerNorm(x + ctx Wo^T + bo)
       x = LayerNorm(x + gelu(x Wi^T + bi) Wo2^T + bo2), gelu(u) = u/2 (1 + erf(u/sqrt 2))
  e = mean of x over the real (non-padding) tokens; e / max(||e||_2, 1e-12)
LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias, biased variance over the 384
features, eps = config.json layer_norm_eps (1e-12). The pooler is not used.

Weights are read by this file's own safetensors reader (numpy.frombuffer), converted to
float64; everything is computed in float64. Requirements: numpy, tokenizers (see
tests/reference/README.md for the pins).
"""

import argparse
import json
import math
import os
import struct
import sys
from pathlib import Path

# One BLAS thread unless told otherwise: the products here are small (e.g. 256x32 by 32x256
# per head), and OpenBLAS's threads made them 10-100x slower on a busy 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1",
          "I8": "i1"}


class Failed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failed(message)


# --- safetensors -----------------------------------------------------------------------

def read_safetensors(path):
    """{name: numpy array (as stored)}, plus the header's __metadata__ (or {})."""
    blob = Path(path).read_bytes()
    check(len(blob) >= 8, f"{path}: too short for safetensors")
    (n,) = struct.unpack("<Q", blob[:8])
    check(8 + n <= len(blob), f"{path}: header length {n} past the end")
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        check(t["dtype"] in DTYPES, f"{path}: {name}: dtype {t['dtype']} not supported here")
        a, b = t["data_offsets"]
        check(0 <= a <= b <= len(data), f"{path}: {name}: offsets [{a}, {b}] outside the data")
        arr = np.frombuffer(data[a:b], dtype=np.dtype(DTYPES[t["dtype"]]))
        check(arr.size == math.prod(t["shape"]), f"{path}: {name}: {arr.size} values, shape "
                                                 f"{t['shape']}")
        out[name] = arr.reshape(t["shape"])
    return out, header.get("__metadata__", {})


# --- tokenizer -------------------------------------------------------------------------

def load_tokenizer(data_dir, max_length=MAX_SEQ_LENGTH):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(data_dir) / "tokenizer.json"))
    tok.no_padding()
    if max_length:
        tok.enable_truncation(max_length=max_length)
    else:
        tok.no_truncation()
    return tok


def tokenize(tok, texts):
    """Token id lists, [CLS] ... [SEP], after str.strip() as sentence-transformers does."""
    return [enc.ids for enc in tok.encode_batch([str(t).strip() for t in texts])]


# --- model -----------------------------------------------------------------------------

class MiniLM:
    def __init__(self, data_dir, weights=None):
        data_dir = Path(data_dir)
        self.config = json.loads((data_dir / "config.json").read_text())
        c = self.config
        check(c.get("hidden_act") == "gelu", f"hidden_act {c.get('hidden_act')}, want gelu")
        check(c.get("position_embedding_type", "absolute") == "absolute",
              "only absolute position embeddings")
        raw, _ = read_safetensors(weights or data_dir / "model.safetensors")
        self.raw = raw
        self.w = {k: v.astype(np.float64) for k, v in raw.items()
                  if v.dtype == np.float32 or v.dtype == np.float16}
        self.h = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        check(self.h % self.heads == 0, "hidden_size not a multiple of num_attention_heads")
        self.layers = c["num_hidden_layers"]
        self.eps = float(c["layer_norm_eps"])

    def layer_norm(self, x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + \
            self.w[prefix + ".bias"]

    def dense(self, x, prefix):
        # As one 2-D product: numpy's stacked (3-D) matmul does not reach BLAS here.
        flat = x.reshape(-1, x.shape[-1]) @ self.w[prefix + ".weight"].T
        return flat.reshape(x.shape[:-1] + (-1,)) + self.w[prefix + ".bias"]

    def forward(self, batch_ids):
        """Normalised sentence embeddings [B, hidden] for a list of token id lists."""
        B = len(batch_ids)
        L = max(len(ids) for ids in batch_ids)
        check(L <= self.config["max_position_embeddings"], f"{L} tokens > max positions")
        ids = np.zeros((B, L), dtype=np.int64)  # [PAD] = 0
        mask = np.zeros((B, L), dtype=np.float64)
        for i, row in enumerate(batch_ids):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1.0
        w = self.w
        x = w["embeddings.word_embeddings.weight"][ids] \
            + w["embeddings.position_embeddings.weight"][np.arange(L)][None] \
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        x = self.layer_norm(x, "embeddings.LayerNorm")
        nh, hd = self.heads, self.h // self.heads
        # transformers' extended attention mask: (1 - mask) * finfo(dtype).min
        add_mask = (1.0 - mask)[:, None, :] * np.finfo(np.float64).min  # [B, 1, L]
        for n in range(self.layers):
            p = f"encoder.layer.{n}."

            def heads(t):  # [B, nh, L, hd], contiguous so that each 2-D product uses BLAS
                return np.ascontiguousarray(t.reshape(B, L, nh, hd).transpose(0, 2, 1, 3))

            q = heads(self.dense(x, p + "attention.self.query"))
            k = heads(self.dense(x, p + "attention.self.key"))
            v = heads(self.dense(x, p + "attention.self.value"))
            ctx = np.empty((B, nh, L, hd))
            for i in range(B):
                for j in range(nh):
                    scores = q[i, j] @ k[i, j].T / math.sqrt(hd) + add_mask[i]
                    scores -= scores.max(-1, keepdims=True)
                    probs = np.exp(scores)
                    probs /= probs.sum(-1, keepdims=True)
                    ctx[i, j] = probs @ v[i, j]
            ctx = ctx.transpose(0, 2, 1, 3).reshape(B, L, self.h)
            x = self.layer_norm(x + self.dense(ctx, p + "attention.output.dense"),
                                p + "attention.output.LayerNorm")
            u = self.dense(x, p + "intermediate.dense")
            g = 0.5 * u * (1.0 + erf(u / math.sqrt(2.0)))
            x = self.layer_norm(x + self.dense(g, p + "output.dense"), p + "output.LayerNorm")
        summed = (x * mask[:, :, None]).sum(1)
        counts = np.maximum(mask.sum(1, keepdims=True), 1e-9)  # sentence-transformers' clamp
        e = summed / counts
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """Exact (libm) erf elementwise: numpy has none, and a polynomial would not be exact."""
    return _erf(x).astype(np.float64)


# --- commands --------------------------------------------------------------------------

def load_strings(path):
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    strings = json.loads(text)
    check(isinstance(strings, list) and all(isinstance(s, str) for s in strings),
          f"{path}: not a JSON list of strings")
    return strings


def cmd_tokens(args):
    tok = load_tokenizer(args.data, args.max_length)
    ids = tokenize(tok, load_strings(args.strings))
    sys.stdout.write("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in ids)
                     + "\n]\n")


def cmd_embed(args):
    strings = load_strings(args.strings)
    check(strings, "no strings to embed")
    ids = tokenize(load_tokenizer(args.data), strings)
    emb = MiniLM(args.data, args.weights).forward(ids)
    rows = ["[" + ",".join(repr(float(v)) for v in row) + "]" for row in emb]
    sys.stdout.write('{"embedding":[\n' + ",\n".join(rows) + '\n],"token_ids":[\n'
                     + ",\n".join(json.dumps(r, separators=(",", ":")) for r in ids) + "\n]}\n")


def cmd_selftest(args):
    data = Path(args.data)
    tj = json.loads((data / "tokenizer.json").read_text())
    print(f"tokenizer.json ships padding={json.dumps(tj['padding'])} "
          f"truncation={json.dumps(tj['truncation'])}; overridden: no padding, truncation "
          f"at {MAX_SEQ_LENGTH}")
    tok = load_tokenizer(data)
    got = tokenize(tok, ["Hello, world!"])[0]
    check(got == [101, 7592, 1010, 2088, 999, 102], f"'Hello, world!' -> {got}")
    got = tokenize(tok, [""])[0]
    check(got == [101, 102], f"'' -> {got}")
    long_ids = tokenize(tok, ["word " * 1000])[0]
    check(len(long_ids) == MAX_SEQ_LENGTH and long_ids[0] == 101 and long_ids[-1] == 102,
          f"1000 words -> {len(long_ids)} ids ending {long_ids[-2:]}")
    print("tokens: 'Hello, world!' -> [101, 7592, 1010, 2088, 999, 102], '' -> [101, 102], "
          f"1000 words -> {MAX_SEQ_LENGTH} ids ending [SEP]: ok")

    model = MiniLM(data)
    a, b = "A man is eating food.", "A man is eating a piece of bread."
    others = ["The new movie is awesome", "",
              "A man is riding a white horse on an enclosed ground. " * 40]
    emb = model.forward(tokenize(tok, [a, b] + others))
    cos = float(emb[0] @ emb[1])
    print(f"cosine({a!r}, {b!r}) = {cos:.6f} (sentence-transformers' published 0.7553)")
    check(abs(cos - 0.7553) < 5e-4, f"cosine {cos}, expected about 0.7553")
    norms = np.linalg.norm(emb, axis=1)
    check(np.all(np.abs(norms - 1) < 1e-12), f"norms {norms}")
    print(f"norms: all within 1e-12 of 1 (max deviation {np.abs(norms - 1).max():.1e}): ok")
    worst = 0.0
    for i, s in enumerate([a, b] + others):
        alone = model.forward(tokenize(tok, [s]))[0]
        worst = max(worst, float(np.abs(alone - emb[i]).max()))
    rev = model.forward(tokenize(tok, list(reversed([a, b] + others))))[::-1]
    worst = max(worst, float(np.abs(rev - emb).max()))
    check(worst < 1e-12, f"batch dependence {worst}")
    print(f"batch independence: each of 5 sentences alone, in a batch of 5 (padded to "
          f"{MAX_SEQ_LENGTH}) and reversed agree within {worst:.1e}: ok")

    combined = data / "minilm.safetensors"
    if combined.exists():
        raw, _ = read_safetensors(combined)
        for name in ("vocab.txt", "config.json"):
            check(raw[name].dtype == np.uint8 and raw[name].tobytes() == (data / name).read_bytes(),
                  f"{combined}: tensor {name} differs from {data / name}")
        for name, arr in model.raw.items():
            if name == "embeddings.position_ids":
                # A buffer (I64 0..511) the conversion leaves out.
                check(name not in raw, f"{combined}: still has {name}")
                continue
            check(name in raw and raw[name].dtype == arr.dtype and np.array_equal(raw[name], arr),
                  f"{combined}: tensor {name} differs from model.safetensors'")
        vocab = (data / "vocab.txt").read_text(encoding="utf-8").split("\n")
        vocab_tok = tok.get_vocab()
        check(all(vocab_tok.get(t) == i for i, t in enumerate(vocab) if t),
              "vocab.txt line numbers are not tokenizer.json's ids")
        e2 = MiniLM(data, combined).forward(tokenize(tok, [a]))
        check(np.abs(e2[0] - emb[0]).max() < 1e-12, "minilm.safetensors gives another embedding")
        print(f"{combined.name}: every model.safetensors tensor identical (less position_ids), vocab.txt and "
              f"config.json verbatim as U8, vocab.txt line i = tokenizer id i: ok")
    print("selftest: ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--data", required=True)
    t.add_argument("--max-length", type=int, default=MAX_SEQ_LENGTH,
                   help="truncation length including [CLS]/[SEP] (0: none)")
    t.add_argument("strings")
    e = sub.add_parser("embed")
    e.add_argument("--data", required=True)
    e.add_argument("--weights", help="a safetensors file instead of DIR/model.safetensors")
    e.add_argument("strings")
    s = sub.add_parser("selftest")
    s.add_argument("--data", required=True)
    args = p.parse_args()
    try:
        {"tokens": cmd_tokens, "embed": cmd_embed, "selftest": cmd_selftest}[args.cmd](args)
    except (Failed, OSError, ValueError, KeyError) as e:
        print(f"bert.py {args.cmd}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent numpy reference for one training step of a small CNN.

Writes tests/fixtures/train_step/: `init.safetensors` (seeded weights), `expected.safetensors`
(the weights after one Adam step on the first 32 examples of the committed MNIST slice,
batch 32, cross-entropy, lr 1e-3, PyTorch's Adam defaults) and `expected.json` (the batch's
loss before the step). `spec.toml` there describes the same network to `tensorlet train`; the
test `tests/train.rs` runs

    tensorlet train spec.toml --data DIR --init init.safetensors --steps 1 --no-shuffle --batch 32

and compares every tensor within 1e-4.

Everything here is float64: forward by direct loops over kernel taps (cross-correlation, as
PyTorch), backward written out by hand (max pooling routes the gradient to the first
maximum of each window in row-major order), Adam as in torch.optim (bias-corrected).

Usage: target/venv/bin/python tests/reference/train_step.py   (numpy required)
"""
import gzip
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as ref  # noqa: E402  (safetensors writer, written independently of Rust)

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "train_step")
SLICE = os.path.join(REPO, "tests", "fixtures", "mnist-test-1k")

C1, C2, H1 = 8, 16, 32  # conv1 out, conv2 out, fc1 out
BATCH, LR, B1, B2, EPS = 32, 1e-3, 0.9, 0.999, 1e-8


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 0x08, "not a u8 IDX file"
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def conv(x, w, b):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    out = np.zeros((n, o, oh, ow))
    for p in range(kh):
        for q in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, p:p + oh, q:q + ow], w[:, :, p, q])
    return out + b[None, :, None, None]


def conv_backward(x, w, dy):
    """Returns dx, dw, db for conv (stride 1, no padding)."""
    o, c, kh, kw = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for p in range(kh):
        for q in range(kw):
            dw[:, :, p, q] = np.einsum("nohw,nchw->oc", dy, x[:, :, p:p + oh, q:q + ow])
            dx[:, :, p:p + oh, q:q + ow] += np.einsum("nohw,oc->nchw", dy, w[:, :, p, q])
    return dx, dw, dy.sum(axis=(0, 2, 3))


def pool(x):
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    out = np.empty((n, c, oh, ow))
    arg = np.empty((n, c, oh, ow), dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(n, c, 4)
            arg[:, :, i, j] = win.argmax(axis=2)  # first maximum, row-major
            out[:, :, i, j] = win.max(axis=2)
    return out, arg


def pool_backward(x_shape, arg, dy):
    dx = np.zeros(x_shape)
    n, c, oh, ow = dy.shape
    for i in range(oh):
        for j in range(ow):
            a = arg[:, :, i, j]
            for k in range(4):
                sel = a == k
                dx[:, :, 2 * i + k // 2, 2 * j + k % 2] += np.where(sel, dy[:, :, i, j], 0.0)
    return dx


def forward_backward(W, x, labels):
    """The batch's mean cross-entropy and its gradient with respect to every weight."""
    # forward
    z1 = conv(x, W["conv1.weight"], W["conv1.bias"])
    a1 = np.maximum(z1, 0)
    p1, arg1 = pool(a1)
    z2 = conv(p1, W["conv2.weight"], W["conv2.bias"])
    a2 = np.maximum(z2, 0)
    p2, arg2 = pool(a2)
    f = p2.reshape(p2.shape[0], -1)
    z3 = f @ W["fc1.weight"].T + W["fc1.bias"]
    a3 = np.maximum(z3, 0)
    logits = a3 @ W["fc2.weight"].T + W["fc2.bias"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -logp[np.arange(n), labels].mean()
    # backward
    G = {}
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1.0
    d /= n
    G["fc2.weight"] = d.T @ a3
    G["fc2.bias"] = d.sum(axis=0)
    d = (d @ W["fc2.weight"]) * (z3 > 0)
    G["fc1.weight"] = d.T @ f
    G["fc1.bias"] = d.sum(axis=0)
    d = (d @ W["fc1.weight"]).reshape(p2.shape)
    d = pool_backward(a2.shape, arg2, d) * (z2 > 0)
    d, G["conv2.weight"], G["conv2.bias"] = conv_backward(p1, W["conv2.weight"], d)
    d = pool_backward(a1.shape, arg1, d) * (z1 > 0)
    _, G["conv1.weight"], G["conv1.bias"] = conv_backward(x, W["conv1.weight"], d)
    return loss, G


def finite_difference_check(W, x, labels, rng, per_tensor=3, h=1e-6):
    """Checks the hand-written backward pass against central differences of the loss."""
    _, G = forward_backward(W, x, labels)
    worst = 0.0
    for name, w in W.items():
        for _ in range(per_tensor):
            i = tuple(int(rng.integers(0, s)) for s in w.shape)
            plus = {k: v.copy() for k, v in W.items()}
            minus = {k: v.copy() for k, v in W.items()}
            plus[name][i] += h
            minus[name][i] -= h
            num = (forward_backward(plus, x, labels)[0] - forward_backward(minus, x, labels)[0]) / (2 * h)
            err = abs(num - G[name][i]) / max(1e-6, abs(num) + abs(G[name][i]))
            worst = max(worst, err)
            assert err < 1e-4, "%s%s: analytic %g, numeric %g" % (name, i, G[name][i], num)
    return worst


def step(W, x, labels):
    loss, G = forward_backward(W, x, labels)
    # Adam, step 1: m = (1-b1) g, v = (1-b2) g^2, bias-corrected.
    new = {}
    for name, w in W.items():
        g = G[name]
        m = (1 - B1) * g
        v = (1 - B2) * g * g
        m_hat = m / (1 - B1)
        v_hat = v / (1 - B2)
        new[name] = w - LR * m_hat / (np.sqrt(v_hat) + EPS)
    return loss, new


def main():
    rng = np.random.default_rng(2026)
    shapes = [
        ("conv1.weight", (C1, 1, 3, 3), 9), ("conv1.bias", (C1,), 9),
        ("conv2.weight", (C2, C1, 3, 3), C1 * 9), ("conv2.bias", (C2,), C1 * 9),
        ("fc1.weight", (H1, C2 * 25), C2 * 25), ("fc1.bias", (H1,), C2 * 25),
        ("fc2.weight", (10, H1), H1), ("fc2.bias", (10,), H1),
    ]
    W = {}
    for name, shape, fan_in in shapes:
        bound = 1 / np.sqrt(fan_in)
        W[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32).astype(np.float64)
    images = read_idx(os.path.join(SLICE, "t10k-images-idx3-ubyte.gz"))[:BATCH]
    labels = read_idx(os.path.join(SLICE, "t10k-labels-idx1-ubyte.gz"))[:BATCH].astype(np.int64)
    x = images.astype(np.float64).reshape(BATCH, 1, 28, 28) / 255.0
    worst = finite_difference_check(W, x[:4], labels[:4], np.random.default_rng(7))
    print("backward pass agrees with central differences (worst relative error %.2g)" % worst)
    loss, new = step(W, x, labels)
    os.makedirs(OUT, exist_ok=True)
    ref.write(os.path.join(OUT, "init.safetensors"), ref.st_bytes_from_params(list(W.items())))
    ref.write(os.path.join(OUT, "expected.safetensors"), ref.st_bytes_from_params(list(new.items())))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"loss": loss, "batch": BATCH, "lr": LR}, f, indent=2)
        f.write("\n")
    moved = max(np.abs(new[k] - W[k]).max() for k in W)
    print("loss %.6f, largest weight change %.3g, wrote %s" % (loss, moved, OUT))


if __name__ == "__main__":
    main()

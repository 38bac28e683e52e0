#!/usr/bin/env python3
"""The seed CNN in Keras (TensorFlow-CPU), for the side-by-side training benchmark.

Same network as models/mnist-cnn/train.toml: conv 3x3 1->32, relu, maxpool 2, conv 3x3
32->64, relu, maxpool 2, flatten, dense 128 relu, dropout 0.25, dense 10 softmax; Adam
(lr 1e-3), batch 128, cross-entropy, on the 60k MNIST training images read from the IDX
files `models/data/fetch.sh mnist` writes. Prints one JSON line: seconds per epoch (each
epoch timed on its own, the first one includes graph tracing), test accuracy after the
last epoch, and predict throughput on the 10k test images at batch 256 (the best of
PREDICT_RUNS runs).

Usage: seed_cnn.py DATA_DIR EPOCHS
"""
import gzip
import json
import os
import struct
import sys
import time

import numpy as np


# Predict runs over the test set; the best is reported (as `run.sh` does for tensorlet).
PREDICT_RUNS = 3


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    _, _, ndim = struct.unpack(">HBB", raw[:4])
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def main():
    data, epochs = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow import keras

    tf.keras.utils.set_random_seed(1)
    load = lambda name: read_idx(os.path.join(data, name))
    x_train = load("train-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y_train = load("train-labels-idx1-ubyte.gz").astype("int64")
    x_test = load("t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y_test = load("t10k-labels-idx1-ubyte.gz").astype("int64")
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - t)
    _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    model.predict(x_test[:512], batch_size=256, verbose=0)  # warm up
    predict = 0.0
    for _ in range(PREDICT_RUNS):  # the best of a few: the machines are shared and noisy
        t = time.perf_counter()
        model.predict(x_test, batch_size=256, verbose=0)
        predict = max(predict, len(x_test) / (time.perf_counter() - t))
    print(json.dumps({
        "tensorflow": tf.__version__,
        "epoch_seconds": seconds,
        "test_accuracy": float(acc),
        "predict_images_per_second": predict,
    }))


if __name__ == "__main__":
    main()

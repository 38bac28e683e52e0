#!/usr/bin/env bash
# Side-by-side: tensorlet against TensorFlow-CPU/Keras on the seed CNN, in one run.
#
#   bash benches/keras/run.sh [EPOCHS]        (default 1)
#
# Installs tensorflow-cpu into its own virtualenv (target/venv-tf) on first use, fetches
# MNIST (models/data/fetch.sh), builds tensorlet, then measures on this machine, one after
# the other: Keras training (Adam, batch 128, 60k images) and predict throughput (10k test
# images, batch 256); `tensorlet train` of models/mnist-cnn/train.toml for the same epochs
# and `tensorlet eval` of the trained weights through the sandbox (batch 256); throughput is
# the best of three runs on each side. Prints a table with the ratios the issue sets as
# targets (epoch time <= 0.5x Keras, eval throughput >= 2x Keras' predict).
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS="${1:-1}"
DATA=target/data
bash models/data/fetch.sh mnist "$DATA" >&2
if ! target/venv-tf/bin/python -c "import tensorflow" 2>/dev/null; then
    echo "installing tensorflow-cpu into target/venv-tf (one time, ~600 MB)" >&2
    python3 -m venv target/venv-tf
    target/venv-tf/bin/pip install --quiet tensorflow-cpu
fi
cargo build --release --quiet -p tensorlet-cli
BIN=target/release/tensorlet
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo "keras: training $EPOCHS epoch(s)..." >&2
target/venv-tf/bin/python benches/keras/seed_cnn.py "$DATA/mnist" "$EPOCHS" > "$OUT/keras.json"
echo "tensorlet: training $EPOCHS epoch(s)..." >&2
"$BIN" train models/mnist-cnn/train.toml --data "$DATA" --epochs "$EPOCHS" --batch 128 \
    -o "$OUT/cnn.safetensors" --log "$OUT/train.jsonl" > "$OUT/train.json"
echo "tensorlet: eval through the sandbox (3 runs, the best counts, as for Keras)..." >&2
for run in 1 2 3; do
    "$BIN" eval mnist-cnn --weights "$OUT/cnn.safetensors" --data "$DATA/mnist" --batch 256 \
        --report "$OUT/eval$run.json" > /dev/null
done

target/venv-tf/bin/python - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
keras = json.load(open(os.path.join(out, "keras.json")))
epochs = [json.loads(l) for l in open(os.path.join(out, "train.jsonl"))]
train = json.load(open(os.path.join(out, "train.json")))
evals = [json.load(open(os.path.join(out, "eval%d.json" % run))) for run in (1, 2, 3)]
k_epoch = min(keras["epoch_seconds"])
t_epoch = min(e["seconds"] for e in epochs)
k_pred = keras["predict_images_per_second"]
t_pred = max(ev["examples_per_second"] for ev in evals)
t_acc = train.get("test_accuracy")
print("| | Keras (TF %s) | tensorlet | ratio | target |" % keras["tensorflow"])
print("| --- | --- | --- | --- | --- |")
print("| epoch time, 60k images, batch 128 (best epoch) | %.1f s | %.1f s | %.2fx | <= 0.5x |" % (k_epoch, t_epoch, t_epoch / k_epoch))
print("| test accuracy after %d epoch(s) | %.2f%% | %.2f%% | | |" % (len(keras["epoch_seconds"]), 100 * keras["test_accuracy"], 100 * t_acc))
print("| predict / eval throughput, 10k images, batch 256 | %.0f img/s | %.0f img/s | %.2fx | >= 2x |" % (k_pred, t_pred, t_pred / k_pred))
PY

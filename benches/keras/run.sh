#!/usr/bin/env bash
# Side-by-side: tensorlet against TensorFlow-CPU/Keras on the seed CNN, in one run.
#
#   bash benches/keras/run.sh [EPOCHS [ROUNDS]]        (defaults 1 and 1)
#
# Installs tensorflow-cpu into its own virtualenv (target/venv-tf) on first use, fetches
# MNIST (models/data/fetch.sh), builds tensorlet, then measures on this machine, one after
# the other: Keras training (Adam, batch 128, 60k images) and predict throughput (10k test
# images, batch 256); `tensorlet train` of models/mnist-cnn/train.toml for the same epochs
# and `tensorlet eval` of the trained weights through the sandbox (batch 256); throughput is
# the best of three runs on each side. With ROUNDS > 1 the whole sequence repeats, Keras
# and tensorlet taking turns, so that both sides see the same spells of load on a shared
# machine. Prints a table with the ratios the issue sets as targets (epoch time <= 0.5x
# Keras, eval throughput >= 2x Keras' predict): each side's best over all rounds, then each
# round's own ratios, whose spread shows how far one run can be trusted.
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS="${1:-1}"
ROUNDS="${2:-1}"
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

for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS: keras, training $EPOCHS epoch(s)..." >&2
    target/venv-tf/bin/python benches/keras/seed_cnn.py "$DATA/mnist" "$EPOCHS" \
        > "$OUT/keras$round.json"
    echo "round $round of $ROUNDS: tensorlet, training $EPOCHS epoch(s)..." >&2
    "$BIN" train models/mnist-cnn/train.toml --data "$DATA" --epochs "$EPOCHS" --batch 128 \
        -o "$OUT/cnn$round.safetensors" --log "$OUT/train$round.jsonl" > "$OUT/train$round.json"
    echo "round $round of $ROUNDS: tensorlet, eval through the sandbox (3 runs, the best" \
        "counts, as for Keras)..." >&2
    for run in 1 2 3; do
        "$BIN" eval mnist-cnn --weights "$OUT/cnn$round.safetensors" --data "$DATA/mnist" \
            --batch 256 --report "$OUT/eval$round-$run.json" > /dev/null
    done
done

target/venv-tf/bin/python - "$OUT" "$ROUNDS" <<'PY'
import json, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(os.path.join(out, name)))
per_round = []
for r in range(1, rounds + 1):
    keras = load("keras%d.json" % r)
    epochs = [json.loads(l) for l in open(os.path.join(out, "train%d.jsonl" % r))]
    evals = [load("eval%d-%d.json" % (r, run)) for run in (1, 2, 3)]
    per_round.append({
        "tf": keras["tensorflow"],
        "k_epoch": min(keras["epoch_seconds"]),
        "t_epoch": min(e["seconds"] for e in epochs),
        "k_pred": keras["predict_images_per_second"],
        "t_pred": max(ev["examples_per_second"] for ev in evals),
        "k_acc": keras["test_accuracy"],
        "t_acc": load("train%d.json" % r).get("test_accuracy"),
        "epochs": len(keras["epoch_seconds"]),
    })
k_epoch = min(r["k_epoch"] for r in per_round)
t_epoch = min(r["t_epoch"] for r in per_round)
k_pred = max(r["k_pred"] for r in per_round)
t_pred = max(r["t_pred"] for r in per_round)
last = per_round[-1]
print("| | Keras (TF %s) | tensorlet | ratio | target |" % last["tf"])
print("| --- | --- | --- | --- | --- |")
print("| epoch time, 60k images, batch 128 (best epoch) | %.1f s | %.1f s | %.2fx | <= 0.5x |" % (k_epoch, t_epoch, t_epoch / k_epoch))
print("| test accuracy after %d epoch(s) (last round) | %.2f%% | %.2f%% | | |" % (last["epochs"], 100 * last["k_acc"], 100 * last["t_acc"]))
print("| predict / eval throughput, 10k images, batch 256 | %.0f img/s | %.0f img/s | %.2fx | >= 2x |" % (k_pred, t_pred, t_pred / k_pred))
if rounds > 1:
    print()
    print("| round | Keras epoch | tensorlet epoch | ratio | Keras predict | tensorlet eval | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(per_round, 1):
        print("| %d | %.1f s | %.1f s | %.2fx | %.0f img/s | %.0f img/s | %.2fx |" % (
            i, r["k_epoch"], r["t_epoch"], r["t_epoch"] / r["k_epoch"],
            r["k_pred"], r["t_pred"], r["t_pred"] / r["k_pred"]))
PY

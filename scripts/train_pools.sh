#!/usr/bin/env bash
# Train the independent models of the held-out profile (src/charex/experiments/profiles/cifar10-heldout.json)
# that are not bundled, into runs/pool/ (the profile's model_folders). Skips models already there.
# `charex reproduce heldout` would train missing ones itself; this lets them train ahead, in any order.
#   scripts/train_pools.sh [CIFAR10_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
C=${CHAREX:-.venv/bin/charex}
DATA=${1:+--data $1}
mkdir -p runs/pool
t() { out=runs/pool/$1.safetensors; shift; [ -f "$out" ] || $C train $DATA --half --quiet --json -o "$out" "$@"; }
# generation references beyond the bundled independent-1 and other-arch
t cnn1-s8 --arch cnn1 --width 0.25 --seed 8 --epochs 6
t plain-s303 --arch plain --width 0.25 --seed 303 --epochs 8
t wide-s202 --arch wide --width 40 --seed 202 --epochs 6
# validation pool (where defaults are chosen)
t resnet8-s101 --arch resnet --width 1 --arch-kw blocks=1 --seed 101 --epochs 8
t plain-s300 --arch plain --width 0.25 --seed 300 --epochs 12
# calibration pool
t cnn1-s4 --arch cnn1 --width 0.25 --seed 4 --epochs 6
t wide-s200 --arch wide --width 40 --seed 200 --epochs 6
# held-out pool (reported numbers only)
t resnet8-s102 --arch resnet --width 1 --arch-kw blocks=1 --seed 102 --epochs 6
t plain-s301 --arch plain --width 0.25 --seed 301 --epochs 8
t wide-s201 --arch wide --width 40 --seed 201 --epochs 6
t tiny-s400 --arch tiny --arch-kw width=32 --seed 400 --epochs 8
t cnn1-s6 --arch cnn1 --width 0.25 --seed 6 --epochs 6
t cnn1-s7 --arch cnn1 --width 0.25 --seed 7 --epochs 6
t cnn1-s5 --arch cnn1 --width 0.25 --seed 5 --epochs 8
# small vision transformers (4x4 patches), one per pool: calibration, held-out, validation
V="--arch vit --arch-kw dim=96 --arch-kw depth=4 --arch-kw heads=4 --epochs 8 --lr 0.03"
t vit-s501 $V --seed 501
t vit-s502 $V --seed 502
t vit-s500 $V --seed 500
# the owner's twins of the base (its recipe, other seeds) for mistake fingerprints (benchmarks/mistakes.py)
t cnn1-s9-twin --arch cnn1 --width 0.25 --seed 9 --epochs 15
t cnn1-s10-twin --arch cnn1 --width 0.25 --seed 10 --epochs 15

#!/usr/bin/env bash
# The demo's student of bundled:base: distilled from the base's probabilities (T = 4) on the thief's half of the
# CIFAR-10 training set, 15 epochs, seed 1210, then stored in float16 with its accuracy re-measured.
#   scripts/bundle_demo_student.sh [CIFAR10_PATH]    (22 min on a 2-core AVX2 EPYC, shared with other work)
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10}
TMP=$(mktemp -d)
charex derive distill bundled:base --student cnn1 --width 0.25 --temperature 4 --epochs 15 --data-split half-b \
  --seed 1210 --data "$DATA" --quiet --json -o "$TMP/student.safetensors"
python - "$TMP/student.safetensors" "$DATA" <<'PY'
import sys

import torch

from charex.data import load_cifar10
from charex.derive import cast_weights
from charex.models import load_model, save_model
from charex.models.loading import bundled_dir
from charex.train import accuracy

m = load_model(sys.argv[1])
card = dict(m.card)
card["test_accuracy"] = accuracy(cast_weights(m, "float16"), load_cifar10(sys.argv[2], "test"))
out = save_model(m, bundled_dir() / "derived-student.safetensors", card, dtype=torch.float16)
print(f"derived-student: {card['lineage']}, {100 * card['test_accuracy']:.2f}% as stored, {out.stat().st_size} bytes")
PY

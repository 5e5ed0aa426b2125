#!/usr/bin/env bash
# Train the bundled demo models (CIFAR-10, seeded, float16 storage) into src/charex/models/bundled/.
# Usage: scripts/make_bundled.sh [CIFAR10_PATH]   (default ../shared/datasets/cifar10)
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10}
OUT=src/charex/models/bundled
EPOCHS=${EPOCHS:-15}
mkdir -p "$OUT"
charex train --arch cnn1 --width 0.25 --seed 0 --epochs "$EPOCHS" --half --data "$DATA" --quiet -o "$OUT/base.safetensors"
for s in 1 2 3; do
  charex train --arch cnn1 --width 0.25 --seed "$s" --epochs "$EPOCHS" --half --data "$DATA" --quiet \
    -o "$OUT/independent-$s.safetensors"
done
charex train --arch resnet --width 1.0 --arch-kw blocks=2 --seed 100 --epochs "$EPOCHS" --half --data "$DATA" --quiet \
  -o "$OUT/other-arch.safetensors"
charex zoo list

#!/usr/bin/env bash
# The held-out thieves and same-recipe independents of issue 24 (students at an API's price), into runs/pool24/.
# Each thief distils bundled:base (or the second base, below) on its own half of the training set (half-b) for 15 epochs; the base's recipe is
# cnn1 w0.25, 15 epochs, seed 0. Skips models already there. The queues run side by side, one thread each:
#   scripts/train_thieves.sh [CIFAR10_DIR]      (15-60 min per model per thread on a 2-core AVX2 EPYC, longer
#                                                as more queues share the cores)
set -euo pipefail
cd "$(dirname "$0")/.."
C=${CHAREX:-.venv/bin/charex}
DATA=${1:+--data $1}
OUT=runs/pool24
mkdir -p $OUT
export OMP_NUM_THREADS=1
s() { out=$OUT/$1.safetensors; shift; [ -f "$out" ] || $C derive distill bundled:base --student cnn1 --width 0.25 \
      --epochs 15 --data-split half-b $DATA --quiet --json -o "$out" "$@" > "${out%.safetensors}.json"; }
# the second base (bundled:reference-plain, plain VGG-11 w0.25, 8 epochs; its twin is bundled:independent-plain)
p() { out=$OUT/$1.safetensors; shift; [ -f "$out" ] || $C derive distill bundled:reference-plain --student plain \
      --width 0.25 --epochs 15 --data-split half-b $DATA --quiet --json -o "$out" "$@" > "${out%.safetensors}.json"; }
i() { out=$OUT/$1.safetensors; shift; [ -f "$out" ] || $C train $DATA --half --quiet --json -o "$out" "$@" \
      > "${out%.safetensors}.json"; }
queue_a() {
  i cnn1-s11 --arch cnn1 --width 0.25 --seed 11 --epochs 15            # same-recipe independent
  s mixup-T4-s1401 --temperature 4 --transfer mixup --seed 1401          # off-distribution transfer set
}
queue_b() {
  s noisy-labels-s1402 --label-noise 0.2 --label-smoothing 0.2 --seed 1402   # label-only, noise + smoothing
  s T4-s1404 --temperature 4 --seed 1404                                     # the demo student's recipe, new seed
  i cnn1-s12 --arch cnn1 --width 0.25 --seed 12 --epochs 15
}
queue_c() {  # the second base: a weight copy (the first base's copies are bundled) and a student
  f=$OUT/plain-copy-ft.safetensors
  [ -f "$f" ] || $C derive finetune bundled:reference-plain --epochs 2 --data-split half-b $DATA --seed 1 --quiet \
      --json -o "$f" > "${f%.safetensors}.json"
  p plain-base-T4-s1501 --temperature 4 --seed 1501
  s noisy-labels-s1406 --label-noise 0.1 --seed 1406                         # milder noise (0.2 was not useful)
}
queue_d() {  # issue 24's second pass: a second seed of the demo student's recipe, a label-only student
  s T4-s1405 --temperature 4 --seed 1405
  s labels-ls-s1408 --label-smoothing 0.1 --seed 1408                        # top-1 labels, smoothing 0.1
}
queue_e() {  # issue 24's third pass: fresh held-out models for the agreement test, read only in its held-out run
  s T4-s1409 --temperature 4 --seed 1409                                     # the demo student's recipe, a third seed
  i cnn1-s13 --arch cnn1 --width 0.25 --seed 13 --epochs 15                  # same-recipe independent, a third seed
}
queue_f() {  # another family: a plain VGG-11 student of the base, a plain independent, a label-only student
  s plain-T4-s1410 --student plain --temperature 4 --seed 1410
  i plain-s14 --arch plain --width 0.25 --seed 14 --epochs 8                 # independent-plain's recipe, new seed
  s labels-s1411 --seed 1411                                                 # top-1 labels, the recipe's smoothing
}
queue_g() {  # an innocent student: the demo student's recipe distilled from cnn1-s11 (another owner's model of the
  # base's recipe, never the base); the raw agreement on the base's mistakes is tempted by it, a paired test is not
  f=$OUT/innocent-T4-s1412.safetensors
  [ -f "$f" ] || $C derive distill $OUT/cnn1-s11.safetensors --student cnn1 --width 0.25 --epochs 15 --temperature 4 \
      --data-split half-b $DATA --seed 1412 --quiet --json -o "$f" > "${f%.safetensors}.json"
}
queue_h() {  # a third twin for the owner (the base's recipe, seed 16): the 3-twin row of the validation stage
  i twin-s16 --arch cnn1 --width 0.25 --seed 16 --epochs 15
}
# QUEUES="b" runs one queue only (default: a to d; e to h are the third pass's) (e.g. while the other's first model trains elsewhere)
for q in ${QUEUES:-a b c d}; do "queue_$q" & done
wait

#!/usr/bin/env bash
# A CIFAR-10 model nobody here wrote, brought as a user would (issue 30): the Keras CNN that the PyPI package
# cifar-10-model 7.4.0 ships (cnn_model.h5, 76.6%), rebuilt with `charex import-keras`; judged by the README's kit;
# then a kit made of it (no twins, seven bundled calibration models, as the user did) judges its own weight
# copies (int8, fine-tuned, pruned 90% and retrained on the thief's half) and the bundled independents.
#   bash scripts/third_party_model.sh [OUT]      (OUT default runs/thirdparty; needs h5py; writes OUT/*.json)
set -euo pipefail
OUT=${1:-runs/thirdparty}
CX=${CHAREX:-.venv/bin/charex}
mkdir -p "$OUT"
if [ ! -f "$OUT/cifar_10_model/trained_models/cnn_model.h5" ]; then
  (cd "$OUT" && pip download --no-deps cifar-10-model==7.4.0 -q && unzip -o -q cifar_10_model-7.4.0-py3-none-any.whl)
fi
H5="$OUT/cifar_10_model/trained_models/cnn_model.h5"
M="$OUT/keras-cnn.safetensors"
$CX import-keras "$H5" -o "$M"
$CX import-keras "$H5" --normalization none -o "$OUT/keras-cnn-wrong-scale.safetensors" || true
[ -f runs/demo/kit.safetensors ] || $CX demo --out runs/demo
set +e
$CX verify runs/demo/kit.safetensors "$M" "$OUT/keras-cnn-wrong-scale.safetensors" --json > "$OUT/readme-kit.json"
set -e
CAL="bundled:independent-1 bundled:independent-2 bundled:independent-3 bundled:other-arch bundled:independent-plain bundled:independent-resnet8 bundled:independent-wide"
[ -f "$OUT/kit.safetensors" ] || $CX fingerprint "$M" --reference bundled:reference-plain bundled:reference-wide \
  --calibration $CAL -o "$OUT/kit.safetensors" --quiet
$CX inspect "$OUT/kit.safetensors" > "$OUT/kit-inspect.txt"
[ -f "$OUT/int8.safetensors" ] || $CX derive quantize "$M" --to int8 -o "$OUT/int8.safetensors"
[ -f "$OUT/finetuned.safetensors" ] || $CX derive finetune "$M" --epochs 2 --lr 0.01 --data-split half-b \
  -o "$OUT/finetuned.safetensors" --quiet
[ -f "$OUT/pruned50.safetensors" ] || $CX derive prune "$M" --ratio 0.5 --until-within 1 --data-split half-b \
  -o "$OUT/pruned50.safetensors" --quiet
[ -f "$OUT/pruned90.safetensors" ] || $CX derive prune "$M" --ratio 0.9 --until-within 1 --data-split half-b \
  -o "$OUT/pruned90.safetensors" --quiet
set +e
$CX verify "$OUT/kit.safetensors" "$OUT/int8.safetensors" "$OUT/finetuned.safetensors" "$OUT/pruned90.safetensors" "$OUT/pruned50.safetensors" \
  bundled:base bundled:derived-student bundled:reference-plain bundled:reference-wide --json > "$OUT/own-kit.json"
rc=$?
set -e
echo "verdicts: $OUT/readme-kit.json, $OUT/own-kit.json (exit $rc)"

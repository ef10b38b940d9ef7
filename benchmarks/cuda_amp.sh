#!/usr/bin/env bash
# One epoch of train-features on cifar10-mini on CUDA, fp32 and --amp bf16, images/s of each.
# Usage: benchmarks/cuda_amp.sh [CIFAR10_MINI_DIR] [WIDTH]   (needs a CUDA GPU; about a minute)
set -euo pipefail
source_dir=${1:-../shared/data/cifar10-mini}
width=${2:-1.0}
work=$(mktemp -d)
isl fetch-data imagefolder --source "$source_dir" --root "$work/data" --name cifar10-mini --quiet
for amp in none bf16; do
  isl train-features --data "$work/data/cifar10-mini" --device cuda --amp "$amp" --width "$width" --epochs 1 \
      --out "$work/amp-$amp.safetensors" --quiet > /dev/null
  rate=$(python -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['images_per_s'])" \
         "$work/amp-$amp.metrics.jsonl")
  echo "resnet18 width $width, --amp $amp: $rate images/s"
done
rm -rf "$work"

#!/usr/bin/env bash
# Issue 5's GPU measurements in one call on a lent GPU machine: the training and the serving
# benchmark with the ViT-B/32-size model, logs under $OUT. The machine's python3 has torch,
# torchvision and transformers; the service's other packages travel as wheels in .whl/ (see
# docs/performance.md for how to fetch them). Run from the repository root:
#   bash bench/device_benchmarks.sh
set -uo pipefail
out=${OUT:-/tmp/clipft-device-benchmarks}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/clipft-site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/clipft-site:$PWD" PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "cores: $(nproc)"
    python3 -c 'import sys, torch, torchvision, transformers
print(sys.version.split()[0], torch.__version__, torchvision.__version__, transformers.__version__)'
} 2>&1 | tee "$out/machine.txt"
timeout "${TRAIN_SECONDS:-300}" python3 -m bench.train_throughput --device cuda \
    --model vit-b-32 --images 4096 --batch-size 256 --epochs "${EPOCHS:-4}" \
    --bare-steps 40 --rounds 3 2>&1 | tee "$out/train.log"
timeout "${PREDICT_SECONDS:-200}" python3 -m bench.predict_throughput --device cuda \
    --model vit-b-32 --min-requests 256 --min-large-requests 16 --max-images-per-cell 4096 \
    --api-workers "${API_WORKERS:-4}" --body "${BODY:-multipart}" 2>&1 | tee "$out/predict.log"
# The same with multipart images decoded only once the body is in (auto turns early decoding on
# with 16 cores): the A/B that says whether decoding while the body arrives pays there.
if [ -n "${EARLY_DECODE_AB:-}" ]; then
    CLIPFT_PREDICT_EARLY_DECODE=off timeout "${PREDICT_SECONDS:-200}" python3 -m \
        bench.predict_throughput --device cuda --model vit-b-32 --min-requests 256 \
        --min-large-requests 16 --max-images-per-cell 4096 --api-workers "${API_WORKERS:-4}" \
        --body "${BODY:-multipart}" --clients 1 2>&1 | tee "$out/predict-no-early.log"
fi
# Longer runs show how the per-epoch costs (evaluation, checkpoint snapshot) amortise.
if [ -n "${LONG_EPOCHS:-}" ]; then
    timeout "${TRAIN_SECONDS:-300}" python3 -m bench.train_throughput --device cuda \
        --model vit-b-32 --images 4096 --batch-size 256 --epochs "$LONG_EPOCHS" \
        --bare-steps 40 --rounds 1 2>&1 | tee "$out/train-long.log"
fi

#!/usr/bin/env bash
# Every GPU check of lwlc in one short script, for a lent GPU machine (run from the repo root).
#   bash benchmarks/gpu.sh check vgg                   # environment, CUDA tests, VGG-11 sweep timing
#   bash benchmarks/gpu.sh resnet callback vgg10k pair # the other benchmarks; results under $OUT
#   bash benchmarks/gpu.sh all                         # one call, at most 9 minutes: paper, analyze
# `all` = paper (benchmarks/paper_gpu.py: the paper's ResNet-18 and VGG-11 pairs, 300 s, the
# Callback measuring the full model and every single layer: --plans full,single) and
# analyze (bench_analyze on lwlc's and the foreign models, float32 with the TF32/bf16 fast modes,
# each against its peak); each step has its own time limit (sum 540 s, under the lease's 600 s per
# command). `check` (CUDA tests, 4 passed on the H200 in 36 s) is left out of `all` to fit.
# Markdown sections land in $OUT/*.md; append them to benchmarks/RESULTS.md afterwards.
# Data for paper: CIFAR-10 under data/cifar-10-batches-py if carried, else Fashion-MNIST from
# data/fashion-mnist/ (carry it: cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/),
# else fabricated images (paper_gpu.py names the data it used; `bash benchmarks/gpu.sh data`
# prints the data it would use, and `paper` prints it first).
# The machine's own python3 holds torch; lwlc runs from src/ (no install), and Python packages the
# machine lacks travel as wheels in .whl/ (git-ignored), fetched on a machine with pip access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     jsonargparse docstring_parser typeshed_client wandb platformdirs pydantic pydantic_core \
#     annotated-types typing-inspection cwevals distro sniffio googleapis-common-protos \
#     opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions \
#     opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-common \
#     opentelemetry-exporter-otlp-common opentelemetry-exporter-http-transport
# (versions as in this project's .venv; the H200 image of 2026-11 lacked these).
set -u
OUT=${OUT:-/tmp/lwlc_gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
export WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1 MPLBACKEND=Agg
step() {  # step SECONDS LOG COMMAND...: run with a time limit, keep going on failure
  local limit=$1 log=$2; shift 2
  echo "=== $(date +%T) $* (limit ${limit}s)" | tee -a "$OUT/$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$log" | tail -n 30
  echo "=== exit ${PIPESTATUS[0]}" | tee -a "$OUT/$log"
}
R=$OUT/bench_analyze.md
parts=("${@:-check}")
[ "${parts[0]}" = all ] && parts=(paper analyze)
for part in "${parts[@]}"; do
  case "$part" in
  check)
    { nvidia-smi; python3 -c "import torch, lightning, torchvision, jsonargparse, wandb, lwlc; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), '| lightning', lightning.__version__, '| jsonargparse', jsonargparse.__version__, '| wandb', wandb.__version__)"; } 2>&1 | tee "$OUT/env.txt"
    step 100 test_gpu.log python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py ;;
  paper)  # the full model and every single layer (rest from A and B), 512 test images each
    python3 benchmarks/paper_gpu.py --show-data 2>&1 | tee -a "$OUT/paper.log"
    step 330 paper.log python3 benchmarks/paper_gpu.py --budget-s 300 --epochs 5 --plans full,single --max-samples 512 --out "$OUT/paper" --results "$OUT/paper_gpu.md" ;;
  data) python3 benchmarks/paper_gpu.py --show-data ;;  # which data `paper` would train on
  analyze)  # (a) skipped: the GPU target is against the tight loop (b); own models at full width
    step 40 bench.log python3 benchmarks/bench_analyze.py --device cuda --models vgg11_bn --samples 512 --skip-authors --precisions tf32,bf16 --results "$R"
    step 55 bench.log python3 benchmarks/bench_analyze.py --device cuda --models resnet18 --samples 128 --skip-authors --precisions tf32,bf16 --results "$R"
    step 55 bench.log python3 benchmarks/bench_analyze.py --device cuda --models tv_resnet18 --samples 256 --skip-authors --precisions tf32,bf16 --results "$R"
    step 55 bench.log python3 benchmarks/bench_analyze.py --device cuda --models pythia --width 384 --seq-len 64 --samples 8 --batch 8 --skip-authors --precisions tf32,bf16 --results "$R" ;;
  vgg) step 120 bench.log python3 benchmarks/bench_analyze.py --device cuda --models vgg11_bn --samples 1024 --precisions tf32,bf16 --results "$R" ;;
  resnet) step 120 bench.log python3 benchmarks/bench_analyze.py --device cuda --models resnet18 --samples 128 --precisions tf32,bf16 --results "$R" ;;
  callback) step 200 bench.log python3 benchmarks/bench_callback_gpu.py --epochs 1 --per-batch 5000 --results "$OUT/callback_gpu.md" ;;
  vgg10k) step 70 bench.log python3 benchmarks/bench_analyze.py --device cuda --models vgg11_bn --samples 10000 --skip-tight --skip-authors --precisions tf32,bf16 --results "$R" ;;
  pair) step 60 bench.log python3 benchmarks/bench_pair.py --epochs 2
        cp benchmarks/RESULTS.md "$OUT/RESULTS_device.md" ;;
  *) echo "unknown part $part (all check data paper analyze vgg resnet callback vgg10k pair)"; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# The GPU quick start in one command (README, "GPU quick start"), on a CUDA machine with
# one GPU of 80-140 GB and the Hugging Face Hub in reach:
#
#   HF_TOKEN=hf_... bash benchmarks/gpu_smoke.sh
#
# 1. installs multisample with the `gpu` extra (plain vllm) into its own virtual
#    environment ($VENV, default .venv-gpu; `make test` never installs it);
# 2. downloads the models of configs/gpu.yaml into $MODELS (default models-gpu/);
# 3. runs a short TOA synthesize of configs/gpu.yaml: the pool starts both chat models
#    and the reward model on the GPU, searches $LIMIT prompts, and stops;
# 4. runs benchmarks/throughput.py on the GPU (vLLM offline vs the pool's best-of-N);
# 5. runs benchmarks/search_throughput.py on the GPU (TOA, beam search and DVTS against
#    best-of-N's tokens/s, and what a prompt token costs against a generated one);
# 6. writes benchmarks/results/gpu-synthesize-<gpu>.json, gpu-throughput-<gpu>.json and
#    gpu-search-throughput-<gpu>.json.
#
# UNTESTED: no GPU run's figures are committed yet. Commit those three files after a run.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
MODELS=${MODELS:-models-gpu}
LIMIT=${LIMIT:-8}
PYTHON=${PYTHON:-python3}

command -v nvidia-smi >/dev/null || { echo "error: no nvidia-smi: this needs a CUDA GPU" >&2; exit 2; }
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)
tag=$(echo "${gpu%%,*}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-*$//')
echo "GPU: $gpu"

# 1. The GPU extra, in an environment of its own.
if [ ! -x "$VENV/bin/multisample" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
fi
"$VENV/bin/pip" install --quiet -e ".[gpu]"
export PATH="$PWD/$VENV/bin:$PATH"

# 2. The models of configs/gpu.yaml, as local folders (Llama's original/ .pth copy skipped).
download() {  # download HUB_ID FOLDER
    hf download "$1" --local-dir "$MODELS/$2" --exclude "original/*" >/dev/null
}
download meta-llama/Llama-3.1-8B-Instruct llama
download Qwen/Qwen2.5-7B-Instruct qwen
download Skywork/Skywork-Reward-V2-Llama-3.1-8B reward
export HF_HUB_OFFLINE=1  # everything is local from here on

# 3. A short TOA synthesize: the pool starts, searches, stops.
run_name="gpu-smoke-$(date -u +%Y%m%d-%H%M%S)"
overrides=(
    --set "models.llama.model=$PWD/$MODELS/llama"
    --set "models.qwen.model=$PWD/$MODELS/qwen"
    --set "reward.model=$PWD/$MODELS/reward"
    --set "limit=$LIMIT"
)
multisample config check configs/gpu.yaml "${overrides[@]}"
started=$(date +%s)
multisample synthesize configs/gpu.yaml "${overrides[@]}" --output-dir runs --name "$run_name"
synthesize_s=$(( $(date +%s) - started ))

mkdir -p benchmarks/results
python - "runs/$run_name/summary.json" "benchmarks/results/gpu-synthesize-$tag.json" \
    "$gpu" "$synthesize_s" <<'EOF'
import json
import sys

import vllm

summary_path, out, gpu, seconds = sys.argv[1:]
with open(summary_path, encoding="utf-8") as handle:
    summary = json.load(handle)
figures = {
    "gpu": gpu,
    "vllm": vllm.__version__,
    "config": "configs/gpu.yaml",
    "wall_s_with_engine_start": int(seconds),
    "summary": summary,
}
with open(out, "w", encoding="utf-8") as handle:
    json.dump(figures, handle, indent=2)
print(f"wrote {out}")
EOF

# 4. Throughput on the GPU: vLLM offline against the pool's best-of-N, same requests.
python benchmarks/throughput.py --model "$PWD/$MODELS/qwen" --num-gpus 1 \
    --gpu-memory-utilization 0.4 --compiled --prompts 64 --n 4 --max-tokens 256 \
    --json "benchmarks/results/gpu-throughput-$tag.json"
echo "wrote benchmarks/results/gpu-throughput-$tag.json"

# 5. Searches that wait on scores, on the GPU: the same comparison as on the CPU.
python benchmarks/search_throughput.py --model "$PWD/$MODELS/qwen" --num-gpus 1 \
    --gpu-memory-utilization 0.4 --strategies toa toa_4_in_flight beam_search dvts \
    --json "benchmarks/results/gpu-search-throughput-$tag.json"
echo "wrote benchmarks/results/gpu-search-throughput-$tag.json"

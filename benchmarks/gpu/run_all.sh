#!/usr/bin/env bash
# Every GPU check of issue 18 in one go, on a machine with one GPU and no network:
#   1. DDP: docs/distributed.md's equivalence test (ddp_equivalence.py) on the GPU
#   2. the README's main job (earlybird on the real MiniLM, SST-2) on the GPU
#   3. training-step time of dense, search and slim (gpu_training_speed.py), fp32 and bf16
#   4. inference, pruned vs dense, eager and torch.compile, fp32 and fp16
#      (gpu_inference_speed.py), and again (eager; and training) with the pruned FFN widths
#      rounded to multiples of 64 / 8
#   5. if time is left: fine-tuning.md's earlybird-vs-dense comparison on the GPU, and
#      ONNX Runtime on the CPU cores (onnx_speed.py)
#
#   OUT=/some/dir benchmarks/gpu/run_all.sh                 # on the GPU machine
#   OUT=/tmp/dry PY=.venv/bin/python benchmarks/gpu/run_all.sh --cpu-dry-run   # here, tiny
#   PARTS="ddp onnx_cpu" DDP_LAUNCHES=one,gloo2 benchmarks/gpu/run_all.sh      # some parts only
#
# Run from the repository root. Beside the working tree it needs .whl/ and .gpu/ (both in
# .git/info/exclude; 50 MB together), made here with:
#   python3 -m pip download --no-deps torch-pruning==1.6.1 -d .whl
#   python benchmarks/gpu/carry.py pack ../shared .gpu     # MiniLM in fp16, SST-2
#   git archive --format=tar -o .gpu/compresskit-src.tar HEAD compresskit strategies \
#       exporters pyproject.toml README.md
# compresskit is installed from that archive into $SITE, so what runs is the commit, not
# files being edited. Each part runs on its own (a failing part does not stop the others)
# under a time cap, and the whole stays within DEADLINE seconds. Results and logs go to $OUT:
# results.tar.gz (every JSON, Markdown and log; rebuilt after each part), run_all.log, and
# summary.md (one line per part).
set -u -o pipefail
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

MODE=gpu
[[ ${1:-} == --cpu-dry-run ]] && MODE=dry
REPO=$(pwd)
PY=${PY:-python3}
OUT=${OUT:-$REPO/bench-out/gpu-$MODE}
DEADLINE=${DEADLINE:-420}  # seconds from the start; parts that would start later are skipped
# Which parts run (setup always does), and which DDP launches (see ddp_equivalence.py).
PARTS=${PARTS:-environment ddp readme training inference rounding finetune onnx_cpu}
DDP_LAUNCHES=${DDP_LAUNCHES:-one,torchrun2,nccl2,gloo2,torchrun1}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/gpu-work}
RES=${RES:-/tmp/gpu-results}
rm -rf "$WORK" "$RES"
mkdir -p "$OUT" "$WORK" "$RES/logs"
export REPO PY SITE WORK RES MODE DDP_LAUNCHES
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE/bin:$PATH

if [[ $MODE == gpu ]]; then
    README_SIZE=(--max-train-samples 3000 --max-seq-len 64)
    TRAIN_ARGS=()
    INFER_ARGS=(--batch-sizes 1,32,256 --compile-batch-sizes 1,32 --dtypes fp32,fp16
                --compile-dtypes fp16,fp32)
    ROUND_INFER_ARGS=(--batch-sizes 1,32,256 --dtypes fp32,fp16 --compile-dtypes "")
    FT_ARGS=()
    ONNX_ARGS=(--threads 16 --runs 20)
    DDP_TIMEOUT=60
else
    README_SIZE=(--max-train-samples 96 --max-seq-len 32)
    TRAIN_ARGS=(--device cpu --dtypes fp32,bf16 --steps 2 --warmup 1 --batch-size 4 --seq-len 32)
    INFER_ARGS=(--device cpu --batch-sizes 1,4 --compile-batch-sizes 4 --dtypes fp32
                --compile-dtypes fp32 --runs 2 --warmup 1 --seq-len 32)
    ROUND_INFER_ARGS=(--device cpu --batch-sizes 1,4 --dtypes fp32 --compile-dtypes ""
                      --runs 2 --warmup 1 --seq-len 32)
    FT_ARGS=(--max-train-samples 64 --epochs 1 --max-seq-len 32)
    ONNX_ARGS=(--smoke)
    DDP_TIMEOUT=120
fi
export DDP_TIMEOUT

pack() {  # everything small from $RES into one file that comes back
    tar -czf "$OUT/results.tar.gz.tmp" -C "$(dirname "$RES")" "$(basename "$RES")" \
        && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}

# part NAME CAP MIN FUNCTION: run FUNCTION in a new bash under `timeout` (at most CAP seconds,
# and never past DEADLINE), its output into $RES/logs/NAME.log; skipped when less than MIN
# seconds are left. One line per part goes to summary.md.
part() {
    local name=$1 cap=$2 min=$3 fn=$4
    [[ " $PARTS " == *" $name "* || $name == setup ]] || return 0
    local left=$((DEADLINE - SECONDS))
    if ((left < min)); then
        echo "=== $name: skipped, ${left}s left (needs ${min}s)"
        echo "| $name | skipped | – | ${left}s left |" >>"$RES/summary.md"
        return
    fi
    local limit=$((cap < left ? cap : left)) start=$SECONDS
    export PART_LIMIT=$limit  # a part that budgets its own time reads this
    echo "=== $name (at ${SECONDS}s, limit ${limit}s)"
    # Arrays do not pass through `export`: declare them again in the new bash.
    local arrays
    arrays=$(declare -p README_SIZE TRAIN_ARGS INFER_ARGS ROUND_INFER_ARGS FT_ARGS ONNX_ARGS)
    timeout --kill-after=5 "$limit" bash -c "$arrays; $fn" 2>&1 | tee "$RES/logs/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    echo "| $name | $rc | $((SECONDS - start))s | $(tail -n 1 "$RES/logs/$name.log" | cut -c1-150 | tr '|' '/') |" >>"$RES/summary.md"
    pack
}

setup() {
    set -e
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
    rm -rf /tmp/compresskit-src && mkdir -p /tmp/compresskit-src
    tar -xf .gpu/compresskit-src.tar -C /tmp/compresskit-src
    if ! (cd /tmp/compresskit-src && "$PY" -m pip install -q --no-index --no-deps \
        --no-build-isolation --no-compile --no-cache-dir --target "$SITE" .); then
        echo "pip could not install compresskit: laying out the package by hand"
        cp -r /tmp/compresskit-src/compresskit "$SITE/"
        cp -r /tmp/compresskit-src/strategies "$SITE/compresskit/strategies"
        cp -r /tmp/compresskit-src/exporters "$SITE/compresskit/exporters"
        mkdir -p "$SITE/bin"
        printf '#!/bin/sh\nexec %s -m compresskit "$@"\n' "$(command -v "$PY")" >"$SITE/bin/compresskit"
        chmod +x "$SITE/bin/compresskit"
    fi
    "$PY" benchmarks/gpu/carry.py unpack .gpu/minilm-fp16 "$WORK/minilm"
    cp -r .gpu/SST-2 "$WORK/SST-2"
    cd "$WORK"  # not the repo root, where ./compresskit (the sources) would shadow the install
    "$PY" -c "import compresskit, torch_pruning; print('compresskit from', compresskit.__file__)"
    compresskit --help | head -n 3
}

environment() {
    nvidia-smi || true
    cd "$WORK"
    "$PY" - <<'EOF'
import platform, torch, transformers, accelerate, onnxruntime
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "accelerate", accelerate.__version__)
print("gpus", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
if torch.cuda.is_available():
    print("nccl", torch.cuda.nccl.version(), "tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
EOF
}

ddp() {
    cd "$WORK"
    "$PY" "$REPO/benchmarks/gpu/ddp_equivalence.py" --work "$WORK/ddp" --output "$RES/ddp" \
        --launches "$DDP_LAUNCHES" --timeout "$DDP_TIMEOUT"
    cp "$WORK"/ddp/*.log "$RES/ddp/" 2>/dev/null
    for name in one torchrun2 nccl2 gloo2 torchrun1; do  # reports, not weights
        [[ -f $WORK/ddp/$name/report.json ]] && cp "$WORK/ddp/$name/report.json" "$RES/ddp/$name-report.json"
    done
    return 0
}

readme_job() {
    set -e
    cd "$WORK"
    local start=$SECONDS
    # The README's first command, with the carried model and data in place of ../shared.
    compresskit prune --strategy earlybird --model "$WORK/minilm" --task sst2 --data "$WORK/SST-2" \
        "${README_SIZE[@]}" --epochs 1 --lr 1e-4 --mask-interval 5 --heads-ratio 0.3333 \
        --ffn-ratio 0.4 --no-progress --output out/sst2-earlybird --overwrite
    echo "wall-clock of the prune command: $((SECONDS - start)) s"
    compresskit info out/sst2-earlybird
    mkdir -p "$RES/readme"
    cp out/sst2-earlybird/{report.json,compresskit.json,pruning.png} "$RES/readme/"
}

training() {
    cd "$WORK"
    "$PY" "$REPO/benchmarks/gpu_training_speed.py" --model "$WORK/minilm" --output "$RES/training" \
        --ticket-report "$WORK/out/sst2-earlybird/report.json" \
        --ticket-fraction "fine-tuning.md SST-2 earlybird, CPU (step 130 of 500)=0.26" "${TRAIN_ARGS[@]}"
}

inference() {
    cd "$WORK"
    local budget=$((PART_LIMIT - 60))  # compiled cases that would start later are skipped
    "$PY" "$REPO/benchmarks/gpu_inference_speed.py" --model "$WORK/minilm" --output "$RES/inference" \
        --time-budget "$budget" "${INFER_ARGS[@]}"
}

rounding() {  # the slim shapes with every FFN width a multiple of 64, then of 8
    cd "$WORK"
    local n rc=0
    for n in 64 8; do
        "$PY" "$REPO/benchmarks/gpu_inference_speed.py" --model "$WORK/minilm" --round-to $n \
            --output "$RES/inference-round$n" "${ROUND_INFER_ARGS[@]}" || rc=$?
    done
    "$PY" "$REPO/benchmarks/gpu_training_speed.py" --model "$WORK/minilm" --round-to 64 \
        --output "$RES/training-round64" "${TRAIN_ARGS[@]}" || rc=$?
    return $rc
}

finetune() {
    cd "$WORK"
    "$PY" "$REPO/benchmarks/finetune_comparison.py" --model "$WORK/minilm" --data "$WORK/SST-2" \
        --runs dense,earlybird --output "$WORK/finetune" "${FT_ARGS[@]}"
    local rc=$?
    mkdir -p "$RES/finetune"
    cp "$WORK"/finetune/*.{json,md,log} "$RES/finetune/" 2>/dev/null
    for run in dense earlybird; do
        [[ -f $WORK/finetune/$run/report.json ]] && cp "$WORK/finetune/$run/report.json" "$RES/finetune/$run-report.json"
    done
    return $rc
}

onnx_cpu() {
    cd "$WORK"
    "$PY" "$REPO/benchmarks/onnx_speed.py" --model "$WORK/minilm" --output "$RES/onnx_cpu" "${ONNX_ARGS[@]}"
}

export -f setup environment ddp readme_job training inference rounding finetune onnx_cpu
{
    echo "| part | exit | seconds | last line |"
    echo "|---|--:|--:|---|"
} >"$RES/summary.md"

{
    part setup 120 30 setup
    if ! grep -q "^| setup | 0 |" "$RES/summary.md"; then
        echo "setup failed: nothing else can run"
    else
        part environment 30 10 environment
        part ddp 240 60 ddp
        part readme 180 45 readme_job
        part training 120 40 training
        part inference 150 60 inference
        part rounding 120 60 rounding
        part finetune 120 80 finetune
        part onnx_cpu 150 90 onnx_cpu
    fi
    echo
    echo "## summary ($MODE, ${SECONDS}s)"
    cat "$RES/summary.md"
    for f in "$RES"/ddp/ddp_equivalence.md "$RES"/training/gpu_training_speed.md \
        "$RES"/inference/gpu_inference_speed.md; do
        [[ -f $f ]] && sed -n '/^|/p' "$f"
    done
} 2>&1 | tee "$OUT/run_all.log"
cp "$RES/summary.md" "$OUT/summary.md"
pack

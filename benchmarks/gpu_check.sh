#!/usr/bin/env bash
# The GPU check: one command that proves clbench's GPU path on a CUDA machine, each step under its own
# time limit (and all of them under one budget), every log under benchmarks/gpu_check_logs/<date>/,
# a summary table (step, status, seconds, key figure) at the end. A failed step is recorded and the
# script goes on. Without a CUDA device it runs its CPU parts and names the GPU steps it skipped.
#
#   benchmarks/gpu_check.sh                 # CUDA: the whole check (< 8 minutes); no CUDA: the CPU parts
#   benchmarks/gpu_check.sh --quick         # the CPU parts, small (one seed, a few learners): minutes
#   options: --data-root DIR  real data for step 6 (default: $CLBENCH_DATA; none: step 6 is skipped)
#            --budget S       seconds for all steps together (default 470)
#
# Steps (benchmarks/README.md, "The GPU check"): 0 environment; 1 the test suite on CUDA
# (pytest -n 8, CLBENCH_TEST_DEVICE=cuda); 2 every built-in learner on split-digits(-online), CPU
# vs CUDA, 3 seeds (benchmarks/agreement.py); 2b bf16 vs fp32 on CUDA; 3 NMC on a random-init
# ViT-B/16 at 224 px over full-size synthetic Split CIFAR-100 in the official pickle format, cold /
# warm / no feature cache vs a bare bf16 forward pass (frozen_encoder.py --cache-check --pickle);
# 4 the three benchmarks with --device cuda; 5 a 60-second sweep of the digits recipes, 4 workers;
# 6 the longest truth run that fits the time left, on real data if present.
set -u
cd "$(dirname "$0")/.." || exit 2

QUICK=0
BUDGET=470
DATA_ROOT=${CLBENCH_DATA:-}
while (( $# )); do
    case $1 in
        --quick) QUICK=1 ;;
        --budget) BUDGET=$2; shift ;;
        --data-root) DATA_ROOT=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

LOGS=benchmarks/gpu_check_logs/$(date +%Y-%m-%d_%H%M%S)
WORK=$LOGS/work  # data root, caches and checkpoints of the check's own runs; removed at the end
mkdir -p "$WORK/data" || exit 2
export PYTHONUNBUFFERED=1 CLBENCH_DATA=$WORK/data
unset CLBENCH_LEADERBOARD  # every run below names its own leaderboard under $LOGS
DEADLINE=$(( SECONDS + BUDGET ))
NAMES=() STATUSES=() TIMES=() FIGURES=()

say() { echo "$*" | tee -a "$LOGS/gpu_check.log"; }

record() {  # NAME STATUS SECONDS FIGURE
    NAMES+=("$1") STATUSES+=("$2") TIMES+=("$3") FIGURES+=("$4")
    say "-- $1: $2 (${3} s) $4"
}

figure() {  # LOG PATTERN: the last line of LOG matching PATTERN (extended regex), squeezed
    grep -E -- "$2" "$1" 2>/dev/null | tail -1 | sed 's/ (already in [^)]*)//' | tr -s ' ' | cut -c1-300
}

status_of() {  # RC LIMIT
    if (( $1 == 0 )); then echo ok
    elif (( $1 == 124 || $1 == 137 )); then echo "TIMEOUT (limit ${2} s)"
    else echo "FAILED (rc $1)"; fi
}

limit_for() {  # LIMIT: the step's limit, cut to the time left; 0 when under 15 s are left
    local left=$(( DEADLINE - SECONDS ))
    if (( left < 15 )); then echo 0; elif (( $1 > left )); then echo "$left"; else echo "$1"; fi
}

step() {  # NAME LIMIT PATTERN CMD...: run CMD under `timeout LIMIT`, log to $LOGS/NAME.log, record it
    local name=$1 limit pattern=$3 start=$SECONDS rc
    limit=$(limit_for "$2"); shift 3
    if (( limit == 0 )); then record "$name" skipped 0 "no time left in the ${BUDGET} s budget"; return; fi
    say "== $name (limit ${limit} s): $*"
    timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" >"$LOGS/$name.log" 2>&1  # CMD may be an exported function
    rc=$?
    record "$name" "$(status_of $rc "$limit")" $(( SECONDS - start )) "$(figure "$LOGS/$name.log" "$pattern")"
}

skip() { record "$1" skipped 0 "$2"; }

# ---- 0. the environment: .venv if clbench imports there; else the machine's Python if it holds torch and
# clbench's dependencies (a GPU image without internet: clbench is installed into it without them); else a
# new .venv with `pip install -e ".[dev]"` (needs a package index) -------------------------------------------
start=$SECONDS
probe() {  # PYTHON: "<1 if CUDA else 0> <description>", or fail if clbench or a dependency does not import
    "$1" -c "
import clbench.runner, clbench.learners.nmc, pandas, sklearn, tabulate, timm, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'
print(int(torch.cuda.is_available()), f'torch {torch.__version__}, {gpu}, {torch.get_num_threads()} CPU threads')" \
        2>>"$LOGS/setup.log"
}
PY=.venv/bin/python
if ! ENV_FIGURE=$(probe "$PY"); then
    if python3 -c "import torch, timm, pandas, sklearn, tabulate" >>"$LOGS/setup.log" 2>&1; then
        PY=$(python3 -c "import sys; print(sys.executable)")
        timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >>"$LOGS/setup.log" 2>&1
    else
        python3 -m venv .venv >>"$LOGS/setup.log" 2>&1
        timeout 600 .venv/bin/pip install -q -e ".[dev]" >>"$LOGS/setup.log" 2>&1
    fi
    ENV_FIGURE=$(probe "$PY")
fi
CLB=$("$PY" -c "import sysconfig; print(sysconfig.get_path('scripts'))" 2>/dev/null)/clbench
if [[ -n $ENV_FIGURE ]]; then
    HAS_CUDA=${ENV_FIGURE%% *}
    record environment ok $(( SECONDS - start )) "$PY: ${ENV_FIGURE#* }"
else
    HAS_CUDA=0
    record environment "FAILED" $(( SECONDS - start )) "clbench does not import: see $LOGS/setup.log"
fi
(( QUICK )) && HAS_CUDA=0
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
say "# $(uname -n), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $LOGS"
CORES=$(nproc)
export PY CLB LOGS WORK

# ---- 1 + 2. the test suite on CUDA, while the CPU side of the agreement sweep runs ------------------------
AGREE=$LOGS/agreement
if (( QUICK )); then SEEDS=0 SCENARIOS=split-digits LEARNERS=--learners=finetune,nmc,replay,linear-probe,simpleshot
elif (( HAS_CUDA )); then SEEDS=0,1,2 SCENARIOS=split-digits,split-digits-online LEARNERS=
else SEEDS=0,1,2 SCENARIOS=split-digits LEARNERS=
fi
"$PY" benchmarks/agreement.py recipes "$AGREE/recipes" --seeds "$SEEDS" --scenarios "$SCENARIOS" $LEARNERS \
    >"$LOGS/agreement-recipes.log" 2>&1
agreement_sweep() {  # DEVICE WORKERS
    "$CLB" sweep "$AGREE/recipes" --device "$1" --workers "$2" --threads 1 --no-progress --data-root "$WORK/data" \
        --cache-dir "$WORK/$1" --leaderboard "$AGREE/$1.csv"
}
export AGREE
export -f agreement_sweep
if (( HAS_CUDA )); then
    CPU_LIMIT=$(limit_for 200) cpu_start=$SECONDS
    say "== 2-agreement-cpu (limit ${CPU_LIMIT} s, beside the tests): agreement_sweep cpu $(( CORES / 2 ))"
    timeout -k 10 "$CPU_LIMIT" bash -c 'agreement_sweep cpu "$1"' _ $(( CORES / 2 > 1 ? CORES / 2 : 1 )) \
        >"$LOGS/2-agreement-cpu.log" 2>&1 &
    CPU_PID=$!
    if has xdist; then XDIST=(-n 8); else XDIST=(); fi
    step 1-tests 200 "passed|failed|error" env CLBENCH_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider \
        "${XDIST[@]}" tests
    wait "$CPU_PID"
    rc=$?
    record 2-agreement-cpu "$(status_of $rc "$CPU_LIMIT")" $(( SECONDS - cpu_start )) \
        "$(figure "$LOGS/2-agreement-cpu.log" 'run\(s\) in the recipes')"
    step 2-agreement-cuda 150 'run\(s\) in the recipes' agreement_sweep cuda 4
    step 2-agreement-table 30 "differ by more" "$PY" benchmarks/agreement.py compare "$AGREE/cpu.csv" "$AGREE/cuda.csv"
    # 2b. bf16 vs fp32 on CUDA: trained learners, and NMC on a frozen ResNet-18 (features encoded in each)
    precision_runs() {
        for p in fp32 bf16; do
            "$CLB" run --device cuda --precision "$p" --no-progress --learner finetune,replay,linear-probe,nmc \
                --seed 0,1,2 --leaderboard "$LOGS/precision/$p.csv" || return
            "$CLB" run --device cuda --precision "$p" --no-progress --learner nmc --set encoder=resnet18 \
                --seed 0 --leaderboard "$LOGS/precision/$p.csv" || return
        done
        "$PY" benchmarks/agreement.py compare "$LOGS/precision/fp32.csv" "$LOGS/precision/bf16.csv"
    }
    mkdir -p "$LOGS/precision"
    export -f precision_runs
    step 2b-bf16-vs-fp32 90 "differ by more" precision_runs
else
    skip 1-tests "GPU step: no CUDA device (run the suite here with: .venv/bin/pytest -n 8)"
    step 2-agreement-cpu 400 'run\(s\) in the recipes' agreement_sweep cpu "$CORES"
    step 2-agreement-table 30 "learner\(s\)" "$PY" benchmarks/agreement.py table "$AGREE/cpu.csv"
    skip 2-agreement-cuda "GPU step: no CUDA device"
    skip 2b-bf16-vs-fp32 "GPU step: no CUDA device (the CPU test is tests/test_precision.py)"
fi

# ---- 3. NMC on a frozen encoder: cold / warm / no feature cache vs the floor ----------------------------------
CACHE_FIGURE="^summary:"
if (( HAS_CUDA )); then
    step 3-frozen-vit 120 "$CACHE_FIGURE" "$PY" benchmarks/frozen_encoder.py --cache-check --pickle --device cuda \
        --encoder vit_base_patch16_224 --repeats 2
elif (( QUICK )); then
    step 3-frozen-reduced 240 "$CACHE_FIGURE" "$PY" benchmarks/frozen_encoder.py --cache-check --pickle --device cpu \
        --sizes 2000 500 --repeats 1 --threads 1
else
    step 3-frozen-reduced 240 "$CACHE_FIGURE" "$PY" benchmarks/frozen_encoder.py --cache-check --pickle --device cpu \
        --quick --repeats 1 --threads "$CORES"
fi

# ---- 4. the three benchmarks on CUDA (each needs its peer library) ---------------------------------------------
if (( HAS_CUDA )); then
    if has avalanche; then
        step 4-frozen-encoder 60 "sweep" "$PY" benchmarks/frozen_encoder.py --device cuda --quick --peer-jobs one \
            --repeats 1
        step 4-trained-learner 60 "online" "$PY" benchmarks/trained_learner.py --device cuda --quick --repeats 1
    else
        skip 4-frozen-encoder "avalanche-lib is not installed (pip install -e '.[avalanche]', or carry its wheels)"
        skip 4-trained-learner "avalanche-lib is not installed (pip install -e '.[avalanche]', or carry its wheels)"
    fi
    if has easyfsl; then
        step 4-fewshot-episodes 60 "clbench, whole run" "$PY" benchmarks/fewshot_episodes.py --device cuda --quick \
            --repeats 1
    else
        skip 4-fewshot-episodes "easyfsl is not installed (pip install easyfsl==1.5.0, or carry its wheel)"
    fi
else
    skip 4-benchmarks "GPU step: no CUDA device (the CPU figures are in benchmarks/README.md)"
fi

# ---- 5. a 60-second sweep of the digits recipes, 4 workers: rows per minute -------------------------------------
if (( HAS_CUDA )); then SWEEP_DEVICE=cuda WORKERS=4; else SWEEP_DEVICE=cpu WORKERS=$(( CORES < 4 ? CORES : 4 )); fi
export SWEEP_DEVICE WORKERS
sweep_for_a_minute() {
    timeout -k 10 60 "$CLB" sweep baselines/ --filter 'split-digits*' --workers "$WORKERS" \
        --device "$SWEEP_DEVICE" --no-progress --data-root "$WORK/data" --cache-dir "$WORK/sweep" \
        --leaderboard "$LOGS/sweep60.csv"
    local rows=0
    [[ -f $LOGS/sweep60.csv ]] && rows=$(( $(wc -l <"$LOGS/sweep60.csv") - 1 ))
    echo "rows per minute: $rows rows in 60 s ($WORKERS workers, $SWEEP_DEVICE)"
}
export -f sweep_for_a_minute
step 5-sweep-60s 80 "rows per minute" sweep_for_a_minute

# ---- 6. the longest truth run that fits the time left ------------------------------------------------------------
if (( ! HAS_CUDA )); then
    skip 6-truth-run "GPU step: no CUDA device"
elif [[ -n $DATA_ROOT && -f $DATA_ROOT/cifar-100-python/train ]]; then
    step 6-truth-run 600 "ok |run\(s\) in the recipes" "$CLB" sweep baselines/ --filter 'split-cifar100/finetune' \
        --device cuda --no-progress --data-root "$DATA_ROOT" --cache-dir "$WORK/truth" --leaderboard "$LOGS/truth.csv"
elif [[ -n $DATA_ROOT && -d $DATA_ROOT/mini-imagenet ]]; then
    step 6-truth-run 600 "ok |run\(s\) in the recipes" "$CLB" sweep baselines/ --filter 'split-miniimagenet/finetune' \
        --device cuda --no-progress --data-root "$DATA_ROOT" --cache-dir "$WORK/truth" --leaderboard "$LOGS/truth.csv"
else
    skip 6-truth-run "no real dataset (cifar-100-python/ or mini-imagenet/) under --data-root '${DATA_ROOT}'"
fi

# ---- summary ------------------------------------------------------------------------------------------------------
rm -rf "$WORK"
{
    echo
    mode=$([[ $HAS_CUDA == 1 ]] && echo CUDA || echo "CPU parts only")$( (( QUICK )) && echo ", --quick")
    echo "## GPU check, $(date '+%Y-%m-%d %H:%M'), $(uname -n): $mode; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| step | status | seconds | key figure |"
    echo "|---|---|---|---|"
    for i in "${!NAMES[@]}"; do
        echo "| ${NAMES[$i]} | ${STATUSES[$i]} | ${TIMES[$i]} | ${FIGURES[$i]//|/\/} |"
    done
    echo
    echo "total $(( SECONDS )) s; logs: $LOGS"
} | tee "$LOGS/summary.md"

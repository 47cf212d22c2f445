#!/usr/bin/env bash
# Every CUDA figure the README gives, in one run on a machine with a GPU, and the CUDA path of
# the commands end to end (search, second order with bf16, the recurrent search, training,
# resuming, the memory refusal). Figures and logs go to OUTDIR, one file per step.
#
#     bash benchmarks/cuda.sh OUTDIR              # about 30 minutes on one H200
#     STEPS="rnn smoke+cost" DEADLINE=$(($(date +%s) + 500)) bash benchmarks/cuda.sh OUTDIR
#
# The scripts import the installed spacec (`pip install -e .`). On a machine with torch but
# without spacec or network (the lent H200s lack lark), build the wheels here and carry them:
#     pip wheel --no-deps . -w .whl && pip download --no-deps lark interegular -d .whl
# and there, before this script: pip install --no-deps --target /tmp/site .whl/*.whl;
# export PYTHONPATH=/tmp/site.
#
# Each measurement is a fresh process, which on the H200 machines it was written for took 15-25 s
# to start, import torch and initialise CUDA: the cost model's twelve configurations alone take
# over 4 minutes, and compiling the search step with CUDA graphs took over 3 (cut off there).
# For a short lease, pick steps. The default order puts first what the two leases of 2026-11-30
# left unmeasured.
#
# STEPS picks steps, run in the order given; `a+b` runs steps a and b at the same time, which
# is only for steps that measure memory or check behaviour (smoke, cost*), never for timings.
# Steps: rnn second compiled compile smoke cost cost_methods cost_memory switches search train.
# LIMIT caps each command's seconds (default 300; COMPILE_LIMIT, default 1200, the compiled
# steps' commands); DEADLINE (seconds since the epoch) caps them
# all: no step starts after it and none runs past it. SNAPSHOT=FILE re-tars OUTDIR there after
# every step, so that what finished survives a run cut short.
set -u
out=$(realpath -m "${1:?usage: bash benchmarks/cuda.sh OUTDIR}")
mkdir -p "$out"
cd "$(dirname "$0")"
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}  # DEVICE=cpu tries the smoke step without a GPU
steps=${STEPS:-rnn second cost_methods+cost_memory+smoke compiled compile switches search train cost}
export PYTHONUNBUFFERED=1

# the seconds a command may run: LIMIT, or what is left before DEADLINE
cap() {
    local limit=${LIMIT:-300}
    if [ -n "${DEADLINE:-}" ]; then
        local left=$((DEADLINE - $(date +%s)))
        ((left < limit)) && limit=$left
    fi
    echo $((limit > 1 ? limit : 1))
}

snapshot() {
    if [ -n "${SNAPSHOT:-}" ]; then
        tar -C "$out" --exclude="*.pt" --exclude="*.png" --exclude="events.out*" \
            -cf "$SNAPSHOT.$BASHPID" . && mv "$SNAPSHOT.$BASHPID" "$SNAPSHOT"
    fi
}

# step NAME COMMAND...: the command's output in OUTDIR/NAME.txt, its tail and status here
step() {
    local name=$1 started rc
    shift
    started=$(date +%s)
    echo "=== $name: $*"
    if declare -F "$1" >/dev/null; then  # a function of this script: its commands are capped
        ("$@") >"$out/$name.txt" 2>&1  # in a subshell: its `set -x` ends with it
    else
        timeout "$(cap)" "$@" >"$out/$name.txt" 2>&1
    fi
    rc=$?
    tail -n 30 "$out/$name.txt"
    echo "=== $name: exit $rc after $(($(date +%s) - started)) s"
    snapshot
}

spacec() { timeout "$(cap)" "$py" -m spacec "$@"; }

smoke() {
    local runs=$out/runs
    rm -rf "$runs"
    set -x
    spacec search --device "$dev" --epochs 1 --out "$runs/first" || return
    spacec search --device "$dev" --order 2 --precision bf16 --epochs 1 --out "$runs/second" \
        || return
    local run
    run=$(ls -d "$runs"/first/*/)
    spacec train --genotype "$run" --device "$dev" --epochs 1 --out "$runs/train" || return
    # killed outright after its first checkpoint within an epoch (the run writes one before its
    # first step, and each save replaces the file: a new inode), then resumed to the end
    "$py" -m spacec search --device "$dev" --epochs 2 --checkpoint-every 3 --out "$runs/killed" &
    local pid=$! waited=0 first
    until ls "$runs"/killed/*/checkpoint.pt >/dev/null 2>&1 || ((waited++ > 600)); do sleep 0.2; done
    first=$(stat -c %i "$runs"/killed/*/checkpoint.pt)
    until [ "$(stat -c %i "$runs"/killed/*/checkpoint.pt)" != "$first" ] || ((waited++ > 1200)); do
        sleep 0.2
    done
    kill -9 "$pid"
    wait "$pid"
    spacec search --resume "$(ls -d "$runs"/killed/*/)" || return
    spacec search darts_rnn --device "$dev" --epochs 1 --limit 4000 --out "$runs/rnn" || return
    # asks for more than the GPU has: refused before allocating, exit status 1, no traceback
    if spacec search --device "$dev" --set C=4096 --out "$runs/huge"; then return 1; fi
    set +x
}

# the run section's speed switches on the search loop's own step, interleaved, first order
s_switches() {
    step switches "$py" search_step.py --method darts --devices cuda --batch 64 --order 1 \
        --memory fast --switches fp32 nchw bf16 --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_switches_cuda_b64.json"
}
# the same with the search step compiled: minutes of compiling each, so their own cap
s_compiled() {
    LIMIT=${COMPILE_LIMIT:-1200} step compiled "$py" search_step.py --method darts --devices cuda --batch 64 --order 1 \
        --memory fast --switches fp32 cudagraphs compile --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_compiled_cuda_b64.json"
}
# the second-order DARTS step against the reference layout's
s_second() {
    step second "$py" search_step.py --devices cuda --batch 64 --kinds second \
        --variants reference fast --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_second_cuda_b64.json"
}
s_smoke() { step smoke smoke; }
s_rnn() {
    step rnn "$py" rnn_tokens.py --devices cuda --kinds search1 search2 --batch 256 --warmup 2 \
        --steps 5 --json "$out/rnn_tokens_cuda_b256.json"
    step rnn_compiled "$py" rnn_tokens.py --devices cuda --kinds search1 --batch 256 --compile \
        --warmup 2 --steps 5 --json "$out/rnn_tokens_cuda_b256_compiled.json"
}
s_compile() {
    LIMIT=${COMPILE_LIMIT:-1200} step compile_train "$py" train_step.py --devices cuda --batch 96 --warmup 3 --steps 10 \
        --precision bf16 --compile --json "$out/train_step_cuda_b96_bf16_compiled.json"
}
s_search() {
    step search "$py" search_step.py --devices cuda --batch 64 --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_cuda_b64.json"
}
s_train() {
    for precision in fp32 bf16; do
        step "train_$precision" "$py" train_step.py --devices cuda --batch 96 --warmup 3 \
            --steps 10 --precision "$precision" --json "$out/train_step_cuda_b96_$precision.json"
    done
}
# COST_SPACES picks the cost model's spaces (default: the three image spaces)
s_cost() {
    # shellcheck disable=SC2086  # a list of names
    step cost "$py" cost_model.py --device cuda \
        --spaces ${COST_SPACES:-darts_cnn nas_bench_201 darts_imagenet} --batch 16 64 \
        --steps first second --limit-gib 120 --json "$out/cost_model_cuda.json"
}
s_cost_methods() {
    step cost_methods "$py" cost_model.py --device cuda --spaces darts_cnn --batch 64 \
        --steps first second --methods all --limit-gib 120 --json "$out/cost_model_methods_cuda.json"
}
s_cost_memory() {
    step cost_memory "$py" cost_model.py --device cuda --spaces darts_cnn nas_bench_201 \
        --batch 64 --steps first --memory balanced low --limit-gib 120 \
        --json "$out/cost_model_memory_cuda.json"
}

for entry in $steps; do
    if [ -n "${DEADLINE:-}" ] && (($(date +%s) >= DEADLINE)); then
        echo "=== $entry: not started (DEADLINE passed)"
        continue
    fi
    IFS=+ read -ra group <<<"$entry"
    for name in "${group[@]}"; do
        if ! declare -F "s_$name" >/dev/null; then
            echo "unknown step $name" >&2
            exit 2
        fi
    done
    if ((${#group[@]} == 1)); then
        "s_${group[0]}"
    else  # side by side: memory and behaviour only
        for name in "${group[@]}"; do "s_$name" & done
        wait
    fi
done

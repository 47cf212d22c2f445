#!/usr/bin/env bash
# Every CUDA figure the README gives, in one run on a machine with a GPU, and the CUDA path of
# the commands end to end (search, second order with bf16, the recurrent search, training,
# resuming, the memory refusal). Figures and logs go to OUTDIR, one file per step.
#
#     bash benchmarks/cuda.sh OUTDIR              # about 20 minutes on one H200
#     STEPS="smoke cost" bash benchmarks/cuda.sh OUTDIR
#
# Each measurement is a fresh process, which on the H200 machine it was written for took 15-25 s
# to start, import torch and initialise CUDA: the cost model's twelve configurations alone took
# over 4 minutes there. For a short lease, pick steps.
#
# Steps (STEPS picks some; they run in this order, what the first lease, on 2026-11-30, left
# unmeasured first): smoke compile switches rnn search train cost. Each runs alone.
# LIMIT caps each step's seconds (default 300); SNAPSHOT=FILE re-tars OUTDIR there after
# every step, so that what finished survives a run cut short.
set -u
out=$(realpath -m "${1:?usage: bash benchmarks/cuda.sh OUTDIR}")
mkdir -p "$out"
cd "$(dirname "$0")"
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}  # DEVICE=cpu tries the smoke step without a GPU
steps=${STEPS:-smoke compile switches rnn search train cost}
export PYTHONUNBUFFERED=1

wanted() { [[ " $steps " == *" $1 "* ]]; }

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
        timeout "${LIMIT:-300}" "$@" >"$out/$name.txt" 2>&1
    fi
    rc=$?
    tail -n 30 "$out/$name.txt"
    echo "=== $name: exit $rc after $(($(date +%s) - started)) s"
    snapshot
}

smoke() {
    local runs=$out/runs spacec=(timeout "${LIMIT:-300}" "$py" -m spacec)
    rm -rf "$runs"
    set -x
    "${spacec[@]}" search --device "$dev" --epochs 1 --out "$runs/first" || return
    "${spacec[@]}" search --device "$dev" --order 2 --precision bf16 --epochs 1 --out "$runs/second" \
        || return
    local run
    run=$(ls -d "$runs"/first/*/)
    "${spacec[@]}" train --genotype "$run" --device "$dev" --epochs 1 --out "$runs/train" || return
    # killed outright after its first checkpoint, then resumed to the end
    "$py" -m spacec search --device "$dev" --epochs 2 --checkpoint-every 3 --out "$runs/killed" &
    local pid=$! waited=0
    until ls "$runs"/killed/*/checkpoint.pt >/dev/null 2>&1 || ((waited++ > 600)); do sleep 0.2; done
    kill -9 "$pid"
    wait "$pid"
    "${spacec[@]}" search --resume "$(ls -d "$runs"/killed/*/)" || return
    "${spacec[@]}" search darts_rnn --device "$dev" --epochs 1 --limit 4000 --out "$runs/rnn" || return
    # asks for more than the GPU has: refused before allocating, exit status 1, no traceback
    if "${spacec[@]}" search --device "$dev" --set C=4096 --out "$runs/huge"; then return 1; fi
    set +x
}

if wanted smoke; then
    step smoke smoke
fi
if wanted compile; then
    step compile_train "$py" train_step.py --devices cuda --batch 96 --warmup 3 --steps 10 \
        --precision bf16 --compile --json "$out/train_step_cuda_b96_bf16_compiled.json"
    step compile_search "$py" search_step.py --method darts --devices cuda --batch 64 --order 1 \
        --memory fast --switches fp32 compile cudagraphs --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_compiled_cuda_b64.json"
fi
if wanted switches; then
    step switches "$py" search_step.py --method darts --devices cuda --batch 64 --order 1 2 \
        --memory fast --switches fp32 bf16 nchw --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_switches_cuda_b64.json"
fi
if wanted rnn; then
    step rnn "$py" rnn_tokens.py --devices cuda --batch 256 --train-batch 64 --warmup 2 --steps 5 \
        --json "$out/rnn_tokens_cuda_b256.json"
fi
if wanted search; then
    step search "$py" search_step.py --devices cuda --batch 64 --rounds 1 --warmup 3 --steps 10 \
        --json "$out/search_step_cuda_b64.json"
fi
if wanted train; then
    for precision in fp32 bf16; do
        step "train_$precision" "$py" train_step.py --devices cuda --batch 96 --warmup 3 --steps 10 \
            --precision "$precision" --json "$out/train_step_cuda_b96_$precision.json"
    done
fi
if wanted cost; then
    step cost "$py" cost_model.py --device cuda --spaces darts_cnn nas_bench_201 darts_imagenet \
        --batch 16 64 --steps first second --limit-gib 120 --json "$out/cost_model_cuda.json"
fi

#!/usr/bin/env bash
# The project's GPU measurements in one command, each part's output kept in one results folder.
#
#   benchmarks/gpu_suite.sh [--device cuda|cpu] [--quick] [--out DIR] [--data PATH] [--jobs N]
#
# Parts (each bounded by a timeout, so one slow part cannot eat the others' time; a run that a
# timeout cuts short keeps the trainings that finished, one JSON line each):
#   1. benchmarks/cotrain_step.py: training-step time, undivided vs S sequential vs S fused
#   2. benchmarks/trainer_vs_reference.py --ablation, S=2: the trainer's schedule, co-training
#      warm-up and padding taken one at a time between the authors' recipe and the reference's,
#      6 seeds, many trainings at once on the one GPU (bf16 autocast on both sides)
#   3. the same for S=1 and S=4 with the authors' recipe, the reference recipe and the reference
# --quick: one epoch, one seed, a few sides (checks the script end to end; what the test runs).
# Needs the CIFAR-10 subset (--data, default ../shared/data/cifar10-subset.npz beside the checkout).
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda quick=0 out=gpu-results jobs=12
data="$(cd .. && pwd)/shared/data/cifar10-subset.npz"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        *) echo "gpu_suite.sh: unknown option $1 (use --device, --quick, --out, --data, --jobs)" >&2; exit 2 ;;
    esac
done
[ -f "$data" ] || { echo "gpu_suite.sh: $data not found; pass --data PATH to the CIFAR-10 subset .npz" >&2; exit 2; }
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "$quick" = 1 ]; then
    epochs=1 seeds=0 step_args="--steps 1 --warmup 0" budget=(600 600 600)
    s2_sides="--sides authors,recipe,reference" s14_sides="authors,reference" s14=1
else
    epochs=10 seeds=0,1,2,3,4,5 step_args="" budget=(100 280 160)
    s2_sides="--ablation" s14_sides="authors,recipe,reference" s14=1,4
fi

part() {  # part NAME SECONDS COMMAND...: run with a timeout, output to the terminal and NAME.txt
    local name="$1" seconds="$2"; shift 2
    echo "== $name: $* (at most ${seconds}s)"
    local started=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    local status=${PIPESTATUS[0]}
    pkill -f "$2" 2>/dev/null  # the worker processes of a run the timeout cut short
    echo "== $name: exit $status after $((SECONDS - started))s" | tee -a "$out/$name.txt"
}

{
    date -u
    python3 -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} 2>&1 | tee "$out/environment.txt"

part cotrain_step "${budget[0]}" python3 benchmarks/cotrain_step.py --device "$device" $step_args
part ablation_S2 "${budget[1]}" python3 benchmarks/trainer_vs_reference.py $s2_sides -S 2 --seeds "$seeds" \
    --epochs "$epochs" --device "$device" --jobs "$jobs" --data "$data" --out "$out/trainings.jsonl"
part recipes_S1_S4 "${budget[2]}" python3 benchmarks/trainer_vs_reference.py --sides "$s14_sides" -S "$s14" \
    --seeds "$seeds" --epochs "$epochs" --device "$device" --jobs "$jobs" --data "$data" --out "$out/trainings.jsonl"
echo "results in $out/"

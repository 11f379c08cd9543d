#!/usr/bin/env bash
# Every GPU measurement of the project in one command, under 8 minutes on one GPU, into one results file.
#
#   benchmarks/gpu_suite.sh [--device cuda|cpu] [--quick] [--dry-run] [--out DIR] [--data PATH] [--jobs N]
#                           [--only PART,...]
#
# Version 2 (issue 29): the default parts are the four below, each bounded by a timeout (450 s in
# all, so the suite ends within 8 minutes on the GPU; a part cut short keeps what it printed, as
# every benchmark prints its rows as they come).  Untested on a GPU when written (no GPU was lent);
# its CPU smoke path (--dry-run) was run.
#   modes             255s  every execution mode's co-training step side by side, with its MFU
#                           (benchmarks/modes_step.py): eager undivided, eager sequential, eager fused,
#                           compiled and CUDA-graph variants, for WRN-16-8 S=4, ResNet-110 S=2 and
#                           WRN-28-10 S=4 at batch 128 in bf16 (75 s a case: the modes the aims
#                           compare are measured first, the rest skipped once a case's time is spent)
#   pool_start         60s  a member-parallel trial's start, launched per trial vs a kept pool (benchmarks/pool.py)
#   epoch_36M          90s  one epoch of a 36M-parameter candidate (WRN-28-10 S=4 fitted to 36M) with
#                           --mode auto on synthetic CIFAR-100-shaped data (50,000 3x32x32 images, 100 classes)
#   cuda_tests         45s  the CUDA-only tests (pytest -m cuda)
# The parts of version 1, run with --only (their budgets as sized from the 2026-11-30 H200 run):
#   cotrain_step       25s  training step: undivided vs S sequential vs S fused (bf16 autocast)
#   mfu                35s  model FLOP utilisation of those steps (FlopCounterMode FLOPs / step time / peak)
#   parallel_step      75s  member-parallel epoch vs undivided, sequential, fused (2 processes on the GPU(s))
#   inference_latency  70s  one batch (1 and 100): undivided / sequential / packed / one process per
#                           member, and the semantic split's G branches one after another / one process each
#   train_epoch        60s  `splitsearch train` one epoch on synthetic:50000 (3x32x32, 10 classes; 36,000
#                           training images after the test and validation splits), WRN-16-8 S=2, batch 128
#   cuda_tests         45s  the CUDA-only tests (pytest -m cuda)
#   ablation_S2        90s  trainer_vs_reference.py --ablation, S=2, seed 0, 10 epochs, many trainings at once
#   recipes_S1_S4      50s  the authors' recipe vs the reference loop at S=1 and S=4, seed 0
# --quick: tiny networks, data and counts (checks the script end to end on the CPU in a few minutes;
#   tests/test_benchmarks.py runs it); --dry-run: --device cpu --quick; --only: just these parts.
# Writes DIR/results.md (every part's figures, its exit status and time, the environment), and
# DIR/<part>.txt, DIR/trainings.jsonl, DIR/train_epoch/metrics.json; DIR defaults to
# benchmarks/gpu_results/<date>-<gpu>/ (the machine's name from benchmarks/resultfiles.py).  Needs
# the CIFAR-10 subset for ablation_S2 and recipes_S1_S4 (--data, default
# ../shared/data/cifar10-subset.npz beside the checkout).
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda quick=0 out="" jobs=12 only="" data_given=0
data="$(cd .. && pwd)/shared/data/cifar10-subset.npz"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --dry-run) device=cpu quick=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --data) data="$2" data_given=1; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        *) echo "gpu_suite.sh: unknown option $1 (use --device, --quick, --dry-run, --out, --data, --jobs, --only)" >&2
           exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_suite.sh: --device must be cuda or cpu, not $device" >&2; exit 2 ;; esac
parts_known=",modes,pool_start,epoch_36M,cuda_tests,cotrain_step,mfu,parallel_step,inference_latency,train_epoch,\
ablation_S2,recipes_S1_S4,"
only="${only:-modes,pool_start,epoch_36M,cuda_tests}"
for name in ${only//,/ }; do
    [[ "$parts_known" == *",$name,"* ]] || { echo "gpu_suite.sh: unknown part $name (one of ${parts_known:1:-1})" >&2; exit 2; }
done
wants() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
if { [ "$data_given" = 1 ] || wants ablation_S2 || wants recipes_S1_S4; } && [ ! -f "$data" ]; then
    echo "gpu_suite.sh: $data not found; pass --data PATH to the CIFAR-10 subset .npz" >&2; exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "$out" ]; then
    machine=$(cd benchmarks && python3 -c 'import resultfiles; print(resultfiles.machine_name())')
    out="benchmarks/gpu_results/$(date -u +%F)-$machine"
fi
mkdir -p "$out"
# The parts that write result files (benchmarks/resultfiles.py) write them into the run's folder, not into
# benchmarks/results/: copy them there to keep a run, as its logs go to benchmarks/gpu_results/.
export SPLITSEARCH_RESULTS="$out/results"
: > "$out/parts.tsv"

if [ "$quick" = 1 ]; then
    step_args="--steps 1 --warmup 0 --batch-size 8 --cases resnet8:2" mfu_args=""
    parallel_args="--arch resnet8 --dataset synthetic:80 --epochs 2 --rounds 1"
    latency_args="--arch resnet8 --batches 1 --repeats 1" train_arch=resnet8 train_data=synthetic:100
    train_args="--epochs 1 --width-mult 0.25 --arch resnet8" s2_sides="--sides authors,recipe,reference" seeds=0
    s14_sides="authors,reference" s14=1 budget=(600 600 600 600 600 600 600 600)
    modes_args="--cases resnet8:2 --batch-size 8 --steps 1 --warmup 0 --modes sequential,fused,compiled-sequential"
    pool_args="--trials 2" big_arch=resnet8 big_images=300 big_params=""
    v2_budget=(900 600 600)
else
    step_args="" mfu_args="--steps 20 --warmup 5" parallel_args="--arch wrn16_8 --epochs 3 --rounds 1"
    latency_args="--arch wrn16_8 --repeats 30" train_arch=wrn16_8 train_data=synthetic:50000
    train_args="--epochs 10" s2_sides="--ablation" seeds=0 s14_sides="authors,reference" s14=1,4
    budget=(25 35 75 70 60 45 90 50)
    modes_args="--case-seconds 75" pool_args="--trials 4" big_arch=wrn28_10 big_images=60000 big_params=36e6
    v2_budget=(255 60 90)
fi

part() {  # part NAME SECONDS COMMAND...: run it under a timeout, output to the terminal and NAME.txt
    local name="$1" seconds="$2"; shift 2
    wants "$name" || return 0
    echo "== $name: $* (at most ${seconds}s)"
    local started=$SECONDS
    # timeout runs the command in a process group of its own and signals the whole group, the
    # worker processes of a part it cuts short included; --kill-after for one that ignores SIGTERM
    # (2 s: eight parts cut short still end within 450 + 16 s).
    timeout --kill-after=2 "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    local status=${PIPESTATUS[0]} took=$((SECONDS - started))
    echo "== $name: exit $status after ${took}s" | tee -a "$out/$name.txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$seconds" >> "$out/parts.tsv"
}

train_epoch() {  # one epoch of `splitsearch train` on synthetic CIFAR-shaped data; seconds from metrics.json
    local run="$out/train_epoch"
    rm -rf "$run" && mkdir -p "$run"
    python3 -c "from splitsearch.config import SplitConfig, TrainConfig; print(SplitConfig(arch='$train_arch', S=2, \
dataset='$train_data', train=TrainConfig(batch_size=128)).to_yaml())" > "$run/config.yaml" || return 1
    python3 -m splitsearch.cli train "$run/config.yaml" --epochs 1 --device "$device" --quiet --out "$run" || return 1
    rm -f "$run"/*.pt  # checkpoints are not results
    python3 -c "import json, sys; m = json.load(open(sys.argv[1])); h = m['history'][-1]
print(f\"train_epoch: $train_arch S=2 on $train_data, batch 128, one epoch {h['seconds']:.1f}s (fit's wall time \
{m['wall_seconds']:.1f}s, validation included)\")" "$run/metrics.json"
}

epoch_36M() {  # one epoch of a 36M-parameter candidate, --mode auto, on random CIFAR-100-shaped data
    local run="$out/epoch_36M"
    rm -rf "$run" && mkdir -p "$run"
    python3 - "$run" "$big_arch" "$big_images" "$big_params" <<'PY' || return 1
import sys
import numpy as np
from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.cost.fitting import fit_width
run, arch, images, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
test = images // 6  # CIFAR-100's 50,000 + 10,000
np.savez(f"{run}/c100.npz", x_train=rng.integers(0, 256, (images - test, 3, 32, 32), dtype=np.uint8),
         y_train=rng.integers(0, 100, images - test), x_test=rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8),
         y_test=rng.integers(0, 100, test))
config = SplitConfig(arch=arch, S=4, dataset=f"npz:{run}/c100.npz", train=TrainConfig(batch_size=128, epochs=1))
if params:
    config = fit_width(config, budget_params=float(params)).config
open(f"{run}/config.yaml", "w").write(config.to_yaml())
PY
    python3 -m splitsearch.cli train "$run/config.yaml" --epochs 1 --device "$device" --mode auto --quiet --out "$run" \
        || return 1
    rm -f "$run"/*.pt  # checkpoints are not results
    python3 -c "import json, sys; m = json.load(open(sys.argv[1])); h = m['history'][-1]; c = m['config']
from splitsearch.config import SplitConfig; from splitsearch.cost.counting import count_config
params = count_config(SplitConfig.from_dict(c)).params
print(f\"epoch_36M: {c['arch']} S={c['S']} width {c['width_mult']:.3g} ({params / 1e6:.1f}M params), batch 128, \
--mode auto: one epoch {h['seconds']:.1f}s (fit's wall time {m['wall_seconds']:.1f}s, validation included)\")" \
        "$run/metrics.json" || return 1
    rm -f "$run"/c100.npz  # nor is the data, which the line above still needed (the config names it)
}

started_all=$SECONDS
{
    date -u
    python3 -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} 2>&1 | tee "$out/environment.txt"

part modes "${v2_budget[0]}" python3 benchmarks/modes_step.py --device "$device" $modes_args
part pool_start "${v2_budget[1]}" python3 benchmarks/pool.py --device "$device" $pool_args
export -f epoch_36M; export out device big_arch big_images big_params
part epoch_36M "${v2_budget[2]}" bash -c epoch_36M
part cotrain_step "${budget[0]}" python3 benchmarks/cotrain_step.py --device "$device" $step_args
part mfu "${budget[1]}" python3 benchmarks/mfu.py --device "$device" $step_args $mfu_args
part parallel_step "${budget[2]}" python3 benchmarks/parallel_step.py --device "$device" $parallel_args
part inference_latency "${budget[3]}" python3 benchmarks/inference_latency.py --device "$device" $latency_args
export -f train_epoch; export out device train_arch train_data
part train_epoch "${budget[4]}" bash -c train_epoch
part cuda_tests "${budget[5]}" python3 -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_cuda.py
part ablation_S2 "${budget[6]}" python3 benchmarks/trainer_vs_reference.py $s2_sides -S 2 --seeds "$seeds" \
    $train_args --device "$device" --jobs "$jobs" --data "$data" --out "$out/trainings.jsonl"
part recipes_S1_S4 "${budget[7]}" python3 benchmarks/trainer_vs_reference.py --sides "$s14_sides" -S "$s14" \
    --seeds "$seeds" $train_args --device "$device" --jobs "$jobs" --data "$data" --out "$out/trainings.jsonl"

# The one results file: the environment, a line per part, then every part's output.
{
    echo "# splitsearch GPU suite: $(head -1 "$out/environment.txt")"
    echo
    echo "\`benchmarks/gpu_suite.sh --device $device$([ "$quick" = 1 ] && echo " --quick")\`," \
         "$((SECONDS - started_all))s in all"
    echo
    echo '```'
    tail -n +2 "$out/environment.txt"
    echo '```'
    echo
    echo "| part | exit | seconds | at most |"
    echo "| --- | --- | --- | --- |"
    while IFS=$'\t' read -r name status took seconds; do
        echo "| $name | $status$([ "$status" = 124 ] && echo " (cut short)") | $took | $seconds |"
    done < "$out/parts.tsv"
    while IFS=$'\t' read -r name _; do
        printf '\n## %s\n\n```\n' "$name"
        cat "$out/$name.txt"
        echo '```'
    done < "$out/parts.tsv"
} > "$out/results.md"
echo "results in $out/results.md ($((SECONDS - started_all))s)"
failed=$(awk -F'\t' '$2 != 0' "$out/parts.tsv" | wc -l)
[ "$failed" = 0 ] || { echo "gpu_suite.sh: $failed part(s) failed or were cut short: see $out/results.md" >&2; exit 1; }

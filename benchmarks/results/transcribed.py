"""How the transcribed result files were made: recorded output of the repository, parsed into result files.

Run once, from the repository root:  python benchmarks/results/transcribed.py

Some benchmarks take tens of minutes to hours, too long to run again on a shared 2-core machine
when the results moved to result files.  Their figures were recorded earlier, as console output
pasted into benchmarks/README.md and as the GPU run's logs and JSON lines under
benchmarks/gpu_results/.  This script reads those sources as they stood at commit SRC_COMMIT
(``git show``), parses each block, and writes it in the format of benchmarks/resultfiles.py with
the run's date, the machine and environment the source states, and notes naming the source file,
the section and the commit that recorded the run.  Nothing is typed by hand.
"""
import json, re, subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC_COMMIT = "d3acb7e"

def source(path, commit=SRC_COMMIT):
    return subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"], capture_output=True, text=True,
                          check=True).stdout

def block_after(text, marker, nth=0):
    """The ```-fenced block that follows the nth occurrence of marker."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(marker, index + 1)
    start = text.index("```\n", index) + 4
    return text[start:text.index("```", start)]

def save(date, machine, name, command, environment, columns, rows, notes):
    folder = REPO / "benchmarks" / "results" / f"{date}-{machine}"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "command": command, "date": date, "machine": machine, "environment": environment,
           "columns": columns, "rows": rows, "notes": notes}
    (folder / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", folder / f"{name}.json", len(rows), "rows")

def provenance(section, commit_of_run, extra=""):
    return (f"Transcribed (not re-run) from the console output recorded in benchmarks/README.md at commit {SRC_COMMIT}, "
            f"section \"{section}\"; the run was recorded in commit {commit_of_run}. {extra}").strip()

readme = source("benchmarks/README.md")


def cotrain_rows(text):
    """The table rows of benchmarks/cotrain_step.py's console output."""
    rows = []
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in ("wrn16_8", "resnet110"):
            rows.append({"network": cells[0], "S": int(cells[1]), "undivided (s)": float(cells[2].rstrip("s")),
                         "sequential (s)": float(cells[3].rstrip("s")), "fused (s)": float(cells[4].rstrip("s")),
                         "fused / undivided": float(cells[5].rstrip("x")),
                         "fused / sequential": float(cells[6].rstrip("x")), "target": " ".join(cells[7:])})
    return rows

CPU2 = {"cpus": 2, "gpu": None}

# 1. parallel_step
text = block_after(readme, "## Member-parallel training and inference on this CPU")
rows = []
for line in text.splitlines()[1:5]:
    way, epoch, step, ratio = line.split()
    rows.append({"way": way, "epoch (s)": float(epoch.rstrip("s")), "step (ms)": float(step.rstrip("ms")),
                 "vs undivided": float(ratio.rstrip("x"))})
save("2026-12-01", "cpu2", "parallel_step", "python benchmarks/parallel_step.py", CPU2,
     list(rows[0]), rows,
     provenance("Member-parallel training and inference on this CPU", "70ee645",
                "ResNet-20 S=2, CIFAR-10 subset, batch 128, 39 steps an epoch; 2 rounds x 2 epochs, the first epoch of "
                "each run dropped; the machine otherwise idle. Aim: parallel within 1.10x of the undivided network and "
                "faster than sequential: not met on 2 CPU cores."))

# 2. parallel_accuracy
text = block_after(readme, "### Accuracy: one process vs member-parallel")
rows = []
for line in text.splitlines():
    found = re.match(r"\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%", line)
    if found:
        rows.append({"seed": int(found[1]), "1 process (%)": float(found[2]), "2 processes (%)": float(found[3])})
save("2026-12-01", "cpu2", "parallel_accuracy", "python benchmarks/parallel_accuracy.py", CPU2, list(rows[0]), rows,
     provenance("Accuracy: one process vs member-parallel", "9a09237",
                "ResNet-20 S=2 x0.7 (154K params) on digits, 10 epochs, validation accuracy; one thread per process."))

# 3. workers
text = block_after(readme, "## More workers, more trials per minute?")
rows = []
for line in text.splitlines():
    found = re.match(r"(\d) workers?\s*: (\d+) trials in\s+([\d.]+) s = ([\d.]+) trials/min", line)
    if found:
        rows.append({"workers": int(found[1]), "trials": int(found[2]), "seconds": float(found[3]),
                     "trials/min": float(found[4])})
save("2026-11-23", "cpu2", "workers", "python benchmarks/workers.py", CPU2, list(rows[0]), rows,
     provenance("More workers, more trials per minute?", "4eb802b",
                "ResNet-20 on digits, the divide space, 8 trials of 20 epochs, one thread per worker, a fresh "
                "PostgreSQL database each time. Measured with the code of that commit."))

# 4. search_quality after the fix
marker = "### After the trainer fix (mean-colour padding, 15 % warm-up), the default run again"
text = block_after(readme, marker)
conf, final = [], []
for line in text.splitlines():
    found = re.match(r"  (\S.*?)\s{2,}(S=\d.*?): search ([\d.]+)%, confirmed ([\d.]+)% \+- ([\d.]+) over seeds", line)
    if found:
        conf.append({"candidate": found[1], "split": found[2], "search (%)": float(found[3]),
                     "confirmed mean (%)": float(found[4]), "sd": float(found[5])})
    found = re.match(r"(confirmed best|undivided|paper S=2|paper S=4)\s+(S=.*?)\s{2,}(\d+)K\s+([\d.]+)%\s+([\d.]+)\s+(.*)$", line)
    if found:
        final.append({"network": found[1], "split": found[2], "params": int(found[3]) * 1000,
                      "test mean (%)": float(found[4]), "sd": float(found[5]),
                      "runs (%)": [float(x.strip().rstrip("%")) for x in found[6].split(",")]})
head = text.splitlines()[0]
env = dict(CPU2, torch=head.split(";")[0].split()[1])
common = ("ResNet-20, divide space, 300K-parameter budget (fit), CIFAR-10 subset; search 8 trials x 3 epochs; "
          "confirm top 2 + baselines x 2 seeds; finals 3 seeds x 6 epochs on all 5,085 training images. ")
save("2026-12-01", "cpu2", "search_quality_confirmation", "python benchmarks/search_quality.py", env, list(conf[0]), conf,
     provenance(marker.strip("# "), "b090da6", common + "Validation accuracy: the search's figure and the confirmed "
                "mean +- sd over seeds 1 and 2."))
save("2026-12-01", "cpu2", "search_quality", "python benchmarks/search_quality.py", env, list(final[0]), final,
     provenance(marker.strip("# "), "b090da6", common + "Test accuracy of the final trainings. Aim: the confirmed best "
                "at least 1 point above the undivided network and not below the paper's S=2: not met."))

# 5. sampler efficiency, two tables
def sampler(marker, table, commit, name):
    text = block_after(readme, marker)
    single, multi, part = [], [], None
    for line in text.splitlines():
        if line.startswith("single objective"):
            part = "single"; continue
        if line.startswith("accuracy and MACs"):
            part = "multi"; continue
        cells = re.findall(r"([\d.]+) \[\s*([\d.]+),\s*([\d.]+)\]\s+(\d+)", line)
        if not cells or part is None:
            continue
        variant = re.split(r"\s{2,}", line.strip())[0]
        budgets = (5, 10, 20) if part == "single" else (10, 20, 40)
        row = {"variant": variant}
        for budget, (median, q1, q3, epochs) in zip(budgets, cells):
            label = "regret" if part == "single" else "hypervolume"
            row[f"{label} @{budget}"] = f"{median} [{q1}, {q3}]"
            row[f"epochs @{budget}"] = int(epochs)
        (single if part == "single" else multi).append(row)
    head = text.splitlines()[0]
    note = (f"Searches replayed 100 times on {table} without training; median [quartiles]. Regret: points of "
            "validation accuracy below the table's best mean; hypervolume: the found front's share of the table's "
            f"(accuracy and MACs). Table summary printed by the run: {head}")
    save(commit[1], "cpu2", name, f"python benchmarks/sampler_efficiency.py --table {table}", CPU2,
         list(single[0]), single, provenance(marker.strip("# ")[:60], commit[0], note + " Single objective."))
    save(commit[1], "cpu2", name + "_multi", f"python benchmarks/sampler_efficiency.py --table {table}", CPU2,
         list(multi[0]), multi, provenance(marker.strip("# ")[:60], commit[0], note + " Accuracy and MACs."))

sampler("`python benchmarks/sampler_efficiency.py --table benchmarks/tables/digits-divide-6-epochs.json` (100 replays)",
        "benchmarks/tables/digits-divide-6-epochs.json", ("d564918", "2026-12-01"), "sampler_efficiency_6_epochs")
sampler("`python benchmarks/sampler_efficiency.py` (the 15-epoch table, 100 replays)",
        "benchmarks/tables/digits-divide.json", ("cfeb929", "2026-12-01"), "sampler_efficiency_15_epochs")

# 6. greedy blocks
for name, finetune, marker, section in (
        ("greedy_blocks", 5, "## Seed 002's greedy split vs TPE", "greedy split vs TPE, 5-epoch fine-tunes"),
        ("greedy_blocks_finetune15", 15, "With a longer fine-tune (`--finetune-epochs 15`",
         "greedy split vs TPE, 15-epoch fine-tunes")):
    text = block_after(readme, marker)
    rows = []
    for line in text.splitlines():
        found = re.match(r"(baseline|greedy|TPE)\s+([\d,]+)\s+([\d.]+)%\s+([+-][\d.]+)\s+(\d+)K\s+([+-][\d.]+)%\s+"
                         r"([\d.]+)M\s+([+-][\d.]+)%\s+([\d.]+) KiB\s+([+-][\d.]+)%", line)
        if found:
            rows.append({"network": found[1], "factors": found[2], "validation accuracy (%)": float(found[3]),
                         "drop (points)": float(found[4]), "params": int(found[5]) * 1000,
                         "params change (%)": float(found[6]), "MACs": float(found[7]) * 1e6,
                         "MACs change (%)": float(found[8]), "activation (KiB)": float(found[9]),
                         "activation change (%)": float(found[10])})
    env = dict(CPU2, torch=text.splitlines()[0].split(";")[0].split()[1])
    command = "python benchmarks/greedy_blocks.py" + ("" if finetune == 5 else " --finetune-epochs 15")
    save("2026-11-23", "cpu2", name, command, env, list(rows[0]), rows,
         provenance(section, "0459d6b",
                    f"VGG16-BN x0.25 on the CIFAR-10 subset, validation on 508 held-out images; greedy: baseline 30 "
                    f"epochs, candidates fine-tuned {finetune}, factors 2,4,6,8, threshold 0.5 points; TPE over the "
                    "blocks space on the same training epochs. Drop: points below the greedy baseline; activation: per "
                    "image, split blocks branch by branch. Measured with the code of that commit (before the "
                    "training defaults changed)."))

# 7. GPU co-training step
gpu = source("benchmarks/gpu_results/2026-11-30-h200/cotrain_step.txt")
rows = cotrain_rows(gpu)
save("2026-11-30", "h200", "cotrain_step", "bash benchmarks/gpu_suite.sh --device cuda --data .bench_data/cifar10-subset.npz --out $OUT --jobs 12",
     {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "driver": "580.159.04"}, list(rows[0]), rows,
     f"Transcribed (not re-run) from benchmarks/gpu_results/2026-11-30-h200/cotrain_step.txt at commit {SRC_COMMIT} "
     "(part cotrain_step of the GPU suite, which runs python benchmarks/cotrain_step.py --device cuda); environment from "
     "that folder's environment.txt. cuda (NVIDIA H200), bf16 autocast, channels_last; batch 128, 3x32x32 inputs, 100 "
     "classes; median of 30 steps after 10 warm-up. Target: the fused step within 1.15x of the undivided network's step, "
     "and faster than sequential.")

# 8. the GPU ablation tables, computed from the recorded JSON lines with ablation_table.py's own functions
import sys
sys.path.insert(0, str(REPO / "benchmarks"))
import ablation_table
GPU = "benchmarks/gpu_results/2026-11-30-h200"
H200 = {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "driver": "580.159.04"}

def ablation(files, base):
    runs = ablation_table.load([REPO / GPU / name for name in files])
    rows = []
    for S in sorted({S for _, S in runs}):
        for (side, size), values in sorted(runs.items()):
            if size == S:
                rows.append({"S": S, "side": side, "test accuracy, %": ablation_table.mean_sd(list(values.values())).strip(),
                             f"paired with {base}, points": ablation_table.paired(values, runs.get((base, S), {})).strip()
                             if side != base else ""})
    return rows

setting = ("ResNet-20, 10 epochs, batch 128, the whole 5,085-image training split of the CIFAR-10 subset, test accuracy "
           "on its 1,017 test images, bf16 autocast, 6 seeds; mean +- sd over seeds, and the paired difference "
           "(mean +- standard error over the seeds both sides have). ")
rows = ablation(["new_defaults.jsonl", "trainings.jsonl"], "authors")
save("2026-11-30", "h200", "ablation",
     f"python benchmarks/ablation_table.py {GPU}/*.jsonl --base authors", H200, list(rows[0]), rows,
     f"Computed here from the trainings recorded on one NVIDIA H200 in {GPU}/ (trainings.jsonl: bash "
     "benchmarks/gpu_suite.sh; new_defaults.jsonl: python3 benchmarks/trainer_vs_reference.py --sides "
     "splitsearch,reference,mean-fill -S 2,1,4 --seeds 0,1,2,3,4,5 --epochs 10 --device cuda --jobs 14; both "
     f"commands in that folder's README.md, files at commit {SRC_COMMIT}), with ablation_table.py's functions; the "
     "environment is that folder's environment.txt. " + setting)
rows = ablation(["new_defaults.jsonl"], "reference")
save("2026-11-30", "h200", "trainer_vs_reference",
     f"python benchmarks/ablation_table.py {GPU}/new_defaults.jsonl --base reference", H200, list(rows[0]), rows,
     f"Computed here from {GPU}/new_defaults.jsonl (commit {SRC_COMMIT}), written on one NVIDIA H200 by python3 "
     "benchmarks/trainer_vs_reference.py --sides splitsearch,reference,mean-fill -S 2,1,4 --seeds 0,1,2,3,4,5 "
     "--epochs 10 --device cuda --jobs 14 (that folder's README.md), with ablation_table.py's functions; the "
     "environment is that folder's environment.txt. " + setting)

# 9. the CPU co-training step, the command line's answer times and the streaming rates (console output)
rows = cotrain_rows(block_after(readme, "## Co-training step time"))
save("2026-11-21", "cpu2", "cotrain_step", "python benchmarks/cotrain_step.py", dict(CPU2, torch="2.14.1"),
     list(rows[0]), rows,
     provenance("Co-training step time", "d14b393", "cpu (2 threads), float32; batch 128, 3x32x32 inputs, 100 classes; "
                "median of 3 steps after 1 warm-up. Target: the fused step within 1.15x of the undivided network's "
                "step, and faster than sequential. Measured with the code of that commit."))

text = block_after(readme, "## How fast does the command line answer?")
rows = []
for line in text.splitlines():
    found = re.match(r"references: python -c pass ([\d.]+) s, python -c 'import torch' ([\d.]+) s", line)
    if found:
        rows += [{"command": "python -c pass", "seconds": float(found[1]), "target (s)": None, "target": None},
                 {"command": "python -c 'import torch'", "seconds": float(found[2]), "target (s)": None, "target": None}]
    found = re.match(r"(splitsearch .*?)\s+([\d.]+) s\s+\(.*target < (\d+) s: (met|NOT met)\)", line)
    if found:
        rows.append({"command": found[1].strip(), "seconds": float(found[2]), "target (s)": float(found[3]),
                     "target": found[4]})
save("2026-12-01", "cpu2", "cli_startup", "python benchmarks/cli_startup.py", dict(CPU2, load_average_1min=0.35),
     list(rows[0]), rows,
     provenance("How fast does the command line answer?", "7a3da6e", "Median wall time of 5 fresh processes (the "
                "dry run: one), each started as a user starts it, on the 2-core machine with nothing else running "
                "(load average 0.35, as the section states)."))

text = block_after(readme, "## Streaming an image folder vs holding it in memory")
resident = re.search(r"resident: ([\d,]+) images/s", text)
stream = re.search(r"stream:\s+([\d,]+) images/s\s+ratio stream/resident ([\d.]+)x", text)
memory = re.search(r"\(PSS\): ([\d,]+) images (\d+) MiB, ([\d,]+) images (\d+) MiB", text)
decode = re.search(r"decoding the folder into memory once: ([\d.]+) s", text)
rows = [{"path": "resident", "images/s": int(resident[1].replace(",", "")), "ratio to resident": 1.0},
        {"path": "stream", "images/s": int(stream[1].replace(",", "")), "ratio to resident": float(stream[2])},
        {"path": f"stream, peak memory of an epoch of {memory[1]} images (MiB)", "MiB": int(memory[2])},
        {"path": f"stream, peak memory of an epoch of {memory[3]} images (MiB)", "MiB": int(memory[4])}]
save("2026-12-01", "cpu2", "streaming", "python benchmarks/streaming.py",
     dict(CPU2, torch=text.splitlines()[0].split(",")[0].split()[1]), ["path", "images/s", "ratio to resident", "MiB"],
     rows,
     provenance("Streaming an image folder vs holding it in memory", "f0bbb9c",
                "1000 CIFAR-10 subset images at 64x64 as JPEG files, S=2, batch 64, 2 decoding workers; rates are the "
                "best of 2 alternating runs of 2 epochs; memory is the PSS of the process and its workers, sampled "
                f"every 20 ms. Decoding the folder into memory once took {decode[1]} s. The section states that five "
                "other sessions used the machine (load average about 10): absolute rates are low, the ratio was "
                "measured side by side."))

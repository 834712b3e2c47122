#!/usr/bin/env bash
# One GPU check of the fast path (issue 13), on synthetic CIFAR-shaped data (no download), at most ~8 minutes on one
# GPU:
#   1. distillers bench: resnet32x4 -> resnet8x4, KD and CRD, batch 64, seed pipeline vs ours (what distill chooses);
#   2. a 2-epoch distill for every fast-path combination (data path x autocast x channels-last; compile off, and on
#      for the default GPU choice), each checked to finish with a finite loss;
#   3. kill-and-resume under --deterministic: a run stopped by SIGTERM in its second epoch and resumed must end with
#      the same weights, bit for bit, as the uninterrupted run;
# then one table. Exit status 1 if any check failed.
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--quick] [--out DIR]
#   --cpu    run on the CPU (CI machines, no GPU); --quick: tiny pair, data and step counts (a few minutes on CPU).
set -u -o pipefail

DEVICE=cuda QUICK=0 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu ;;
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --cpu, --quick, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"
distillers() { "$PY" -m distillers "$@"; }

if [ "$QUICK" = 1 ]; then
  TEACHER=resnet14 STUDENT=resnet8 N_TRAIN=512 N_TEST=128 STEPS=6 WARMUP=3 BENCH_IMAGES=2048 NCE_K=512 MAX_STEPS=4
  RUN_NCE_K=256
else
  TEACHER=resnet32x4 STUDENT=resnet8x4 N_TRAIN=10000 N_TEST=2000 STEPS=100 WARMUP=20 BENCH_IMAGES=50000 NCE_K=16384
  MAX_STEPS=40 RUN_NCE_K=4096  # CRD in the distill runs: at most the ~9,900 negatives of 10,000 images
fi
COMMON=(--data-dir "$OUT/data" --device "$DEVICE" --batch-size 64 --workers 2 --max-steps-per-epoch "$MAX_STEPS")

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS"; }  # check, configuration, ok|FAIL, detail

# ---- synthetic data and a teacher --------------------------------------------------------------------------------
"$PY" - "$OUT/data" "$N_TRAIN" "$N_TEST" <<'EOF'
import pickle, sys
from pathlib import Path
import numpy as np
root, n_train, n_test = Path(sys.argv[1]) / "cifar-100-python", int(sys.argv[2]), int(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name, n in (("train", n_train), ("test", n_test)):
    labels = (np.arange(n) % 100).tolist()
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # CIFAR's pickle layout: rows of R, G, B planes
    with open(root / name, "wb") as handle:
        pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [l // 5 for l in labels],
                     "filenames": [f"{i}.png" for i in range(n)], "batch_label": name}, handle)
with open(root / "meta", "wb") as handle:
    pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                 "coarse_label_names": [f"super{i}" for i in range(20)]}, handle)
EOF
distillers train-teacher --model "$TEACHER" --epochs 1 --name teacher --out "$OUT/runs" "${COMMON[@]}" \
  > "$OUT/teacher.log" 2>&1 || { echo "teacher training failed: see $OUT/teacher.log" >&2; exit 1; }
T_CKPT="$OUT/runs/teacher/last.pt"

# ---- 1. the bench --------------------------------------------------------------------------------------------------
if distillers bench --device "$DEVICE" --pairs "$TEACHER:$STUDENT:kd" "$TEACHER:$STUDENT:crd" --steps "$STEPS" \
    --warmup "$WARMUP" --num-images "$BENCH_IMAGES" --nce-k "$NCE_K" --workers 2 --json "$OUT/bench.json" \
    > "$OUT/bench.md" 2> "$OUT/bench.log"; then
  "$PY" - "$OUT/bench.json" >> "$RESULTS" <<'EOF'
import json, sys
for row in json.load(open(sys.argv[1])):
    config = f"{row['teacher']} -> {row['student']} {row['method']}, batch {row['batch_size']}"
    detail = (f"seed {row['seed_images_per_s']:.0f} img/s, ours {row['ours_images_per_s']:.0f} img/s: "
              f"{row['speedup']:.2f}x (data {row['data_path']}, amp {row['amp']}, compile {row['compile']})")
    print(f"bench\t{config}\tok\t{detail}")
EOF
else
  record bench "$TEACHER -> $STUDENT kd, crd" FAIL "see $OUT/bench.log"
fi

# ---- 2. every fast-path combination through distill ----------------------------------------------------------------
final_loss() {  # the last epoch's training loss of a run directory, or nothing
  "$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print(r[-1].get("train_loss", r[-1].get("loss","")))' \
    "$1/metrics.jsonl" 2>/dev/null
}
combination() {  # name, then the flags
  local name="$1"; shift
  local started=$SECONDS
  if distillers distill --teacher "$T_CKPT" --student "$STUDENT" --method kd --epochs 2 --name "$name" \
      --out "$OUT/runs" "${COMMON[@]}" "$@" > "$OUT/$name.log" 2>&1; then
    local loss; loss="$(final_loss "$OUT/runs/$name")"
    local fallback; fallback="$(grep -o 'compilation fell back to eager' "$OUT/$name.log" | head -1)"
    if "$PY" -c 'import math,sys; sys.exit(0 if math.isfinite(float(sys.argv[1])) else 1)' "$loss" 2>/dev/null; then
      record distill "$*" ok "2 epochs in $((SECONDS - started)) s, last train loss $loss${fallback:+, $fallback}"
    else
      record distill "$*" FAIL "loss '$loss' (see $OUT/$name.log)"
    fi
  else
    record distill "$*" FAIL "exit $? after $((SECONDS - started)) s: $(tail -1 "$OUT/$name.log")"
  fi
}
for data in device cpu; do
  for amp in on off; do
    for layout in on off; do
      combination "c-$data-$amp-$layout" --data-path "$data" --amp "$amp" --channels-last "$layout"
    done
  done
done
combination c-compile --data-path device --amp on --channels-last on --compile

# ---- 3. kill and resume under --deterministic ----------------------------------------------------------------------
RESUME_FLAGS=(--teacher "$T_CKPT" --student "$STUDENT" --method crd --nce-k "$RUN_NCE_K" --epochs 2 --deterministic \
              --data-path device --amp auto --out "$OUT/runs" "${COMMON[@]}")
distillers distill "${RESUME_FLAGS[@]}" --name whole > "$OUT/whole.log" 2>&1
whole=$?
distillers distill "${RESUME_FLAGS[@]}" --name cut > "$OUT/cut.log" 2>&1 &
pid=$!
until [ -s "$OUT/runs/cut/metrics.jsonl" ] || ! kill -0 "$pid" 2>/dev/null; do sleep 0.2; done  # epoch 1 is done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
cut=$?
distillers distill "${RESUME_FLAGS[@]}" --name cut --resume > "$OUT/resume.log" 2>&1
resumed=$?
if [ "$whole" = 0 ] && [ "$resumed" = 0 ]; then
  same="$("$PY" - "$OUT/runs/whole/last.pt" "$OUT/runs/cut/last.pt" <<'EOF'
import sys, torch
a, b = (torch.load(path, weights_only=True)["model"] for path in sys.argv[1:3])
diff = [name for name in a if not torch.equal(a[name], b[name])]
print("identical weights" if not diff and a.keys() == b.keys() else f"{len(diff)} tensors differ, e.g. {diff[:2]}")
EOF
)"
  status=FAIL; [ "$same" = "identical weights" ] && status=ok
  record resume "crd, --deterministic, SIGTERM in epoch 2 (exit $cut) then --resume" "$status" "$same"
else
  record resume "crd, --deterministic" FAIL "exit codes: whole $whole, resume $resumed (see $OUT/*.log)"
fi

# ---- the table -----------------------------------------------------------------------------------------------------
echo
echo "gpu_check on $DEVICE$([ "$QUICK" = 1 ] && echo ', quick'): $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)') ($(date -u +%FT%TZ), ${SECONDS} s)"
echo "| check | configuration | result | detail |"
echo "|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$RESULTS"
echo "(logs and run directories: $OUT)"
! grep -q $'\tFAIL\t' "$RESULTS"

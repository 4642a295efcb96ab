#!/usr/bin/env bash
# The project's GPU check, in one call on a GPU machine (no network), from the repository root:
#
#   bash benchmarks/gpu_check.sh                      # writes $OUT/gpu_check.json, gpu_check.log, cuda_tests.xml
#   GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh    # small sizes, any machine; without CUDA the CUDA parts skip
#
# Parts, each under its own time limit (seconds left over by one part go to the next; all of them within
# GPU_CHECK_TOTAL_S, 450 s by default, so the call stays under 8 minutes):
#   install  carried wheels (benchmarks/fetch_gpu_wheels.sh → build/wheels) into a scratch folder put on
#            PYTHONPATH, with --no-deps: torch, torchvision and torch-geometric stay as the machine has them;
#            skipped when librosa and soundfile already import; then, in every case, librosa.stft,
#            librosa.filters.mel and librosa.resample on a tiny array: librosa imports its numba code lazily,
#            so a numba/numpy mismatch fails here, once, with its message (logs/install.log), not in every part
#   env      versions and the device (bench_gpu.py env)
#   tests    pytest -m cuda tests/test_cuda.py -v -rA: one PASSED/FAILED line per test streamed to the log,
#            which a timed-out run keeps (gpu_report.py reads it when the JUnit report cuda_tests.xml, written
#            only when pytest ends, is missing)
#   encoder  extraction nodes/s (fp32, fp16 autocast; spectrograms on the device and in the loader workers;
#            batch-1 reference), training clips/s (both spectrogram paths; channels-last, determinism) (bench_gpu.py)
#   gnn      GNN seconds per epoch on ~300k nodes of 1536-d and peak GPU memory (bench_gpu.py)
#   demo_data the synthetic `demo` preset, seed 0 (GPU_CHECK_QUICK=1: `tiny`), generated into the scratch folder
#   demo     python run_pipeline.py --data <that> --profile demo --device 0 --work <scratch> (its `stage times`
#            line): the repository's demo folder and any configured KEMDy20 are left alone
#   report   everything into $OUT/gpu_check.json (benchmarks/gpu_report.py), headline figures printed last
# A failed or timed-out part is recorded and the next one runs; the JSON is written in every case.
#
# Environment: OUT (output folder; default build/gpu_check), PYTHON (default python3), GPU_CHECK_QUICK (1: small
# sizes), GPU_CHECK_DEVICE (a CUDA index or cpu; default 0 when torch sees CUDA), GPU_CHECK_TOTAL_S,
# GPU_CHECK_WORK (scratch folder, kept; default a new temporary folder, removed at the end), GPU_CHECK_WHEELS
# (default build/wheels).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
QUICK=${GPU_CHECK_QUICK:-0}
OUT_DIR=${OUT:-$ROOT/build/gpu_check}
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/build/wheels}
QUICK_ARGS=()
if [ "$QUICK" = 1 ]; then
  QUICK_ARGS=(--quick)
  TOTAL_S=${GPU_CHECK_TOTAL_S:-900}
else
  TOTAL_S=${GPU_CHECK_TOTAL_S:-450}
fi
if [ -n "${GPU_CHECK_WORK:-}" ]; then
  WORK=$GPU_CHECK_WORK
  CLEAN=0
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  CLEAN=1
fi
mkdir -p "$OUT_DIR" "$WORK/parts" "$WORK/status" "$WORK/logs"
rm -f "$OUT_DIR/gpu_check.json" "$OUT_DIR/cuda_tests.xml"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 MPLBACKEND=Agg LC_NUMERIC=C
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
SECONDS=0
BANK=0

elapsed_since() {  # seconds since the $EPOCHREALTIME value $1, one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

write_status() {  # write_status NAME RC SECONDS LIMIT [EXTRA_JSON_FIELDS]
  printf '{"part": "%s", "rc": %d, "seconds": %s, "limit_s": %d%s}\n' "$1" "$2" "$3" "$4" "${5:-}" \
    >"$WORK/status/$1.json"
}

part_limit() {  # part_limit BUDGET: this part's limit (its budget + what earlier parts left), within the total
  local left=$((TOTAL_S - SECONDS)) limit=$(($1 + BANK))
  ((limit > left)) && limit=$left
  echo "$limit"
}

run_part() {  # run_part NAME BUDGET COMMAND...: the command under its limit, output also in logs/NAME.log
  local name=$1 limit
  limit=$(part_limit "$2")
  shift 2
  if ((limit < 15)); then
    echo "=== [$name] skipped: $((TOTAL_S - SECONDS)) s left of ${TOTAL_S} s"
    printf '{"part": "%s", "skipped": "%s s left of the %s s total"}\n' "$name" "$((TOTAL_S - SECONDS))" \
      "$TOTAL_S" >"$WORK/status/$name.json"
    return
  fi
  echo "=== [$name] limit ${limit} s: $*"
  local t0=$EPOCHREALTIME s0=$SECONDS rc
  GPU_CHECK_PART_BUDGET_S=$((limit - 15)) timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/logs/$name.log"
  rc=${PIPESTATUS[0]}
  BANK=$((limit - (SECONDS - s0)))
  ((BANK < 0)) && BANK=0
  local secs
  secs=$(elapsed_since "$t0")
  write_status "$name" "$rc" "$secs" "$limit"
  echo "=== [$name] exit status $rc after $secs s"
}

INSTALLED=none
install_wheels() {  # carried wheels into $WORK/site, on PYTHONPATH after the repository
  local site=$WORK/site
  if "$PY" -c "import librosa, soundfile" 2>/dev/null; then
    echo "librosa and soundfile import already: no wheel installed"
    return 0
  fi
  if ! compgen -G "$WHEELS/runtime/*.whl" >/dev/null; then
    echo "no wheels in $WHEELS/runtime: run benchmarks/fetch_gpu_wheels.sh and carry build/wheels"
    return 3
  fi
  timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$WHEELS"/runtime/*.whl || return 4
  export PYTHONPATH="$PYTHONPATH:$site"
  INSTALLED=runtime
  if ! "$PY" -c "import pytest" 2>/dev/null; then
    echo "pytest missing: installing the carried pytest wheels"
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$WHEELS"/pytest/*.whl || return 5
    INSTALLED=runtime+pytest
  fi
  "$PY" -c "import librosa, soundfile; print('librosa', librosa.__version__, 'soundfile', soundfile.__version__)" \
    || return 6
}

warm_librosa() {  # the librosa calls the pipeline makes (spectrogram, mel filters, resampling) on a tiny array
  timeout 120 "$PY" - <<'PY' || { echo "librosa warm-up failed: the pipeline's spectrograms would fail the same way"; return 7; }
import numba
import numpy as np
import librosa

wav = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
librosa.stft(wav, n_fft=256, hop_length=200, win_length=200, center=False)
librosa.filters.mel(sr=8000, n_fft=256, n_mels=32, fmax=4000.0)
librosa.resample(wav, orig_sr=16000, target_sr=8000)
print(f"librosa warm-up ok (stft, filters.mel, resample): librosa {librosa.__version__}, "
      f"numba {numba.__version__}, numpy {np.__version__}")
PY
}

finish() {  # the report; exit status 0 when every part ran, 1 when one failed, 2 when no report was made
  local t0=$EPOCHREALTIME status
  echo "=== [report]"
  "$PY" benchmarks/gpu_report.py --work "$WORK" --out "$OUT_DIR/gpu_check.json" "${QUICK_ARGS[@]}"
  status=$?
  if [ ! -s "$OUT_DIR/gpu_check.json" ]; then
    printf '{"error": "benchmarks/gpu_report.py failed, see gpu_check.log", "work": "%s"}\n' "$WORK" \
      >"$OUT_DIR/gpu_check.json"
    status=2
  fi
  [ -f "$WORK/cuda_tests.xml" ] && cp "$WORK/cuda_tests.xml" "$OUT_DIR/"
  echo "gpu_check: $SECONDS s in all (report $(elapsed_since "$t0") s), exit status $status"
  ((CLEAN)) && rm -rf "$WORK"
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$status"
}

echo "gpu_check $(date -u +%FT%TZ) on $(uname -n), quick=$QUICK, total ${TOTAL_S} s, work $WORK, out $OUT_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi -L

# install
t0=$EPOCHREALTIME
torch_before=$("$PY" -c "import torch; print(torch.__version__)" 2>/dev/null || echo unavailable)
# into a file, not through a pipe: install_wheels must run in this shell to extend PYTHONPATH
install_wheels >"$WORK/logs/install.log" 2>&1
rc=$?
warmup=skipped
if ((rc == 0)); then
  warm_librosa >>"$WORK/logs/install.log" 2>&1
  rc=$?
  if ((rc == 0)); then warmup=ok; else warmup=failed; fi
fi
cat "$WORK/logs/install.log"
torch_after=$("$PY" -c "import torch; print(torch.__version__)" 2>/dev/null || echo unavailable)
write_status install "$rc" "$(elapsed_since "$t0")" 60 \
  ", \"wheels_installed\": \"$INSTALLED\", \"librosa_warmup\": \"$warmup\", \"torch_before\": \"$torch_before\", \
\"torch_after\": \"$torch_after\""
echo "=== [install] exit status $rc; torch $torch_before before, $torch_after after"

DEVICE=${GPU_CHECK_DEVICE:-$("$PY" -c "import torch; print(0 if torch.cuda.is_available() else 'cpu')" 2>/dev/null \
  || echo cpu)}
echo "device: $DEVICE"

if [ "$QUICK" = 1 ]; then
  budgets=(env=60 tests=120 encoder=300 gnn=120 demo_data=60 demo=240)
else
  budgets=(env=20 tests=100 encoder=140 gnn=100 demo_data=20 demo=70)
fi
declare -A BUDGET
for pair in "${budgets[@]}"; do BUDGET[${pair%=*}]=${pair#*=}; done

run_part env "${BUDGET[env]}" "$PY" benchmarks/bench_gpu.py env --out "$WORK/parts/env.json"
# -v: each test's PASSED/FAILED streamed to logs/tests.log as it ends, kept when the part is killed
run_part tests "${BUDGET[tests]}" "$PY" -m pytest -m cuda tests/test_cuda.py -v -rA -p no:cacheprovider \
  --junitxml="$WORK/cuda_tests.xml"
run_part encoder "${BUDGET[encoder]}" "$PY" benchmarks/bench_gpu.py encoder --device "$DEVICE" "${QUICK_ARGS[@]}" \
  --work "$WORK/encoder" --out "$WORK/parts/encoder.json"
run_part gnn "${BUDGET[gnn]}" "$PY" benchmarks/bench_gpu.py gnn --device "$DEVICE" "${QUICK_ARGS[@]}" \
  --work "$WORK/gnn" --out "$WORK/parts/gnn.json"
rm -rf "$WORK/gnn"  # about 4 GB of node files and graphs at full size
# the demo on data of its own in the scratch folder: without --data, run_pipeline.py would regenerate the
# repository's encoder/KEMDy20_demo, or run on a configured real KEMDy20
if [ "$QUICK" = 1 ]; then PRESET=tiny; else PRESET=demo; fi
run_part demo_data "${BUDGET[demo_data]}" "$PY" encoder/data/make_synthetic_kemdy20.py \
  --out "$WORK/demo_data/KEMDy20" --preset "$PRESET" --seed 0
run_part demo "${BUDGET[demo]}" "$PY" run_pipeline.py --data "$WORK/demo_data/KEMDy20" --profile demo \
  --device "$DEVICE" --work "$WORK/demo"
finish

#!/usr/bin/env bash
# The GPU check: `optscale bench estimator`, `optscale bench replay` and `optscale bench
# scale` on one CUDA GPU, each one's figures (its stdout) written to a folder. Downloads no
# model and no data set; each benchmark has a time budget, so the whole check ends in under
# 8 minutes. `bench scale` runs at 2x10^4 and 2x10^5 questions (the same tenfold ratio as its
# default 10^5 and 10^6, whose larger log alone takes over 6 minutes on a CPU host: reading
# and writing JSONL is host work that a GPU does not speed up).
#
#   scripts/gpu_check.sh [--install] [--rehearse] [OUT_DIR]
#
#   OUT_DIR     where the figures go [runs/gpu_check/<UTC date and time>]:
#               <bench>.txt (the figures), <bench>.log (its stderr), environment.txt,
#               summary.txt (status and seconds per benchmark)
#   --install   first install JAX's CUDA plugin matching the installed jax into this
#               Python: pip install "jax[cuda12]==<jax version>" (a download of ~1 GB;
#               OPTSCALE_JAX_CUDA=cuda13 picks CUDA 13). Without it the check stops and
#               says so when JAX sees no GPU.
#   --rehearse  run the script's steps on the CPU with small sizes (no GPU needed): checks
#               the script, not the GPU; its figures mean nothing.
#
# Python: the active virtual environment, else the repository's .venv, else `python3`.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
rehearse=0
out=""
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    --rehearse) rehearse=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
out="${out:-runs/gpu_check/$(date -u +%Y-%m-%dT%H%M%SZ)}"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  python="$VIRTUAL_ENV/bin/python"
elif [[ -x .venv/bin/python ]]; then
  python=".venv/bin/python"
else
  python="python3"
fi
optscale=("$python" -m optscale_jax.experiments.cli)
"$python" -c "import optscale_jax" 2>/dev/null || {
  echo "gpu_check: $python cannot import optscale_jax: run scripts/install.sh first" >&2
  exit 1
}

stop() { echo "gpu_check: $*" >&2; exit 1; }

jax_devices() {
  # Prints the devices of the CUDA backend; fails when JAX has none.
  JAX_PLATFORMS=cuda "$python" -c 'import jax; print(jax.devices())' 2>/dev/null
}

if [[ $rehearse == 1 ]]; then
  export JAX_PLATFORMS=cpu
  devices=$("$python" -c 'import jax; print(jax.devices())')
else
  command -v nvidia-smi >/dev/null || stop "no NVIDIA driver here (nvidia-smi not found);" \
    "this check needs a CUDA GPU (--rehearse runs the steps on the CPU)"
  if ! devices=$(jax_devices); then
    jax_version=$("$python" -c 'import jax; print(jax.__version__)')
    wheel="jax[${OPTSCALE_JAX_CUDA:-cuda12}]==$jax_version"
    [[ $install == 1 ]] || stop "JAX sees no GPU (its CUDA plugin is missing or does not" \
      "load). Install it with: $python -m pip install \"$wheel\" (or run this script" \
      "with --install), then run the check again."
    echo "gpu_check: installing $wheel into $python" >&2
    "$python" -m pip install --quiet "$wheel"
    devices=$(jax_devices) || stop "JAX still sees no GPU after installing $wheel;" \
      "check the driver (nvidia-smi) and: JAX_PLATFORMS=cuda $python -c 'import jax; jax.devices()'"
  fi
  # Run on the GPU or fail: never fall back to the CPU silently.
  export JAX_PLATFORMS=cuda
fi

mkdir -p "$out"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "python: $("$python" -c 'import sys; print(sys.version.split()[0])')"
  echo "jax: $("$python" -c 'import jax, jaxlib; print(jax.__version__, jaxlib.__version__)')"
  echo "jax_devices: $devices"
  if [[ $rehearse == 1 ]]; then
    echo "gpu: none (--rehearse: CPU, small sizes; these figures mean nothing)"
  else
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  fi
} > "$out/environment.txt"
: > "$out/summary.txt"

failed=0
# bench NAME BUDGET_SECONDS ARGS...: runs `optscale bench NAME ARGS...` within its budget.
bench() {
  local name=$1 budget=$2 status=0 start end
  shift 2
  echo "gpu_check: optscale bench $name $* (at most ${budget} s)" >&2
  start=$(date +%s)
  timeout --kill-after=10 "$budget" "${optscale[@]}" bench "$name" "$@" \
    > "$out/$name.txt" 2> "$out/$name.log" || status=$?
  end=$(date +%s)
  case $status in
    0) line="$name: ok $((end - start)) s" ;;
    124|137) line="$name: over its budget of $budget s (partial figures)"; failed=1 ;;
    *) line="$name: failed with status $status after $((end - start)) s (see $name.log)"; failed=1 ;;
  esac
  echo "$line" | tee -a "$out/summary.txt" >&2
}

if [[ $rehearse == 1 ]]; then
  bench estimator 100 --questions 20000 --scipy-subsample 5
  bench replay 120 --questions 500 --permutations 2 --vote-questions 50 --peer-rows 20
  bench scale 120 --sizes 2000 20000
else
  bench estimator 100
  bench replay 140
  bench scale 200 --sizes 20000 200000
fi

echo "gpu_check: figures in $out" >&2
for name in estimator replay scale; do
  [[ -s "$out/$name.txt" ]] && { echo "== $name"; cat "$out/$name.txt"; }
done
exit $failed

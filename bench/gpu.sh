#!/usr/bin/env bash
# The GPU measurement of issue 5 in one call: the speed and accuracy presets as one sweep on JAX,
# with the device, backend and command written beside the summary table.
#
# On an offline GPU box with JAX but no TensorFlow/Keras (see ../shared/gpu/README.md): first, on a
# machine with the package index, `bash ../shared/gpu/prepare.sh` fills .whl/ and .data/; carry both.
#
#   bash bench/gpu.sh                                        # fast_fashion, article000_cnn4_augment, best_fashion(_recipes)
#   PRESETS=fast_fashion bash bench/gpu.sh trainer.epochs=16 # one preset, extra overrides for every job
#
# Results go to $OUT/gpu (or outputs/gpu): summary.md/csv of the sweep, each job's run directory,
# and device.txt. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-outputs}/gpu
PRESETS=${PRESETS:-fast_fashion,article000_cnn4_augment,best_fashion,best_fashion_recipes}  # the variant last: a timed-out call still returns the others

if ! "$PY" -c "import keras, hydra" 2>/dev/null; then
  [ -d .whl ] || { echo "gpu.sh: keras/hydra missing and no .whl/ here; run bash ../shared/gpu/prepare.sh first" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export COLUMNS=${COLUMNS:-160} PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
[ -d .data ] && export CNNRUN_DATA=${CNNRUN_DATA:-$PWD/.data}

mkdir -p "$DEST"
cmd=("$PY" -m cnnrun train -m "experiment=$PRESETS" "hydra.sweep.dir=$DEST" "$@")
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi (CPU)')"
  echo "backend: $KERAS_BACKEND, $("$PY" -c 'import jax, keras; print("jax", jax.__version__, jax.devices()[0].platform, "/ keras", keras.__version__)' 2>/dev/null || echo '?')"
  echo "command: ${cmd[*]}"
} | tee "$DEST/device.txt"
"${cmd[@]}"

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
# Results go to $OUT/gpu (or outputs/gpu): device.txt (device, backend, commands, the data-parallel
# row), sweep/ (summary.md/csv and each job's run directory) and, where there is more than one
# accelerator, data_parallel/ (one run over all of them). PYTHON picks the interpreter (default python3).
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
cmd=("$PY" -m cnnrun train -m "experiment=$PRESETS" "hydra.sweep.dir=$DEST/sweep" "$@")
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi (CPU)')"
  echo "backend: $KERAS_BACKEND, $("$PY" -c 'import jax, keras; print("jax", jax.__version__, jax.devices()[0].platform, "/ keras", keras.__version__)' 2>/dev/null || echo '?')"
  echo "command: ${cmd[*]}"
} | tee "$DEST/device.txt"

# One run over every accelerator (distribute=data_parallel), first (it is short), beside the same preset
# on one device in the sweep below; only where there is more than one. The batch stays the preset's
# global batch, so both train the same steps.
devices=$("$PY" -c 'import jax; print(jax.local_device_count())' 2>/dev/null || echo 1)
if [ "$devices" -gt 1 ]; then
  dp=("$PY" -m cnnrun train experiment=fast_fashion distribute=data_parallel "hydra.run.dir=$DEST/data_parallel" "$@")
  echo "data-parallel over $devices devices: ${dp[*]}" | tee -a "$DEST/device.txt"
  "${dp[@]}" || echo "gpu.sh: the data-parallel run ended with exit status $?" | tee -a "$DEST/device.txt"
  [ -f "$DEST/data_parallel/metrics.json" ] && "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print('data_parallel', m.get('status'), m.get('distribute'), 'test accuracy', \
m.get('test_accuracy'), 'train seconds', m.get('train_seconds'))" "$DEST/data_parallel/metrics.json" | tee -a "$DEST/device.txt"
else
  echo "data-parallel row skipped: $devices accelerator(s) here" | tee -a "$DEST/device.txt"
fi

"${cmd[@]}" || echo "gpu.sh: the sweep ended with exit status $? (its summary says which job failed)" | tee -a "$DEST/device.txt"


"""The Keras callback behind debug=profile (cnnrun/hooks/debug.py): per training step, the time in the step,
in the input between steps and in cnnrun's callbacks; the input feed alone; the backend's profiler trace."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from cnnrun import backend
from cnnrun.record import files, layout

log = logging.getLogger("cnnrun")


class _Timed:
    """Wraps a callback's batch hooks to add their time to a total."""

    def __init__(self, profile: StepTimer, callback):
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            real = getattr(callback, hook)
            if getattr(real, "__func__", None) is getattr(keras.callbacks.Callback, hook):
                continue  # no hook of its own: Keras does not even call it
            setattr(callback, hook, self._wrap(profile, real))

    @staticmethod
    def _wrap(profile, real):
        def timed(batch, logs=None):
            start = time.perf_counter()
            real(batch, logs)
            profile.callback_time += time.perf_counter() - start
        return timed


class StepTimer(keras.callbacks.Callback):
    """debug=profile: per training step, the time spent in the step itself, in the input between steps and in
    cnnrun's callbacks, after `warmup` steps (compilation); the input feed alone, timed apart; and the backend's
    profiler trace of `trace` steps (TensorBoard's profile tab, or ui.perfetto.dev for JAX's trace.json.gz).
    Training stops after warmup + steps: the epoch is broken off on purpose and is not a result."""

    def __init__(self, run_dir: Path, data, t, warmup: int, steps: int, trace: int):
        super().__init__()
        self.run_dir, self.data, self.t = run_dir, data, t
        self.warmup, self.steps, self.trace = warmup, steps, min(trace, steps)
        self.rows: list[dict] = []
        self.seen = 0  # training steps so far
        self.callback_time = 0.0
        self._begin = self._end = None
        self._callbacks_at_begin = self._callbacks_at_end = 0.0
        self._tracing = False
        self.trace_dir = run_dir / layout.PROFILE

    def callbacks(self, others: list) -> list:
        for callback in others:
            _Timed(self, callback)
        return [self, *others]  # first: its begin stamp precedes theirs, its end stamp follows the step alone

    def done(self, rows: list[dict]) -> bool:
        return len(self.rows) > self.steps

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self._end is not None and self.rows and self.rows[-1]["input"] is None:  # since the last step ended
            self.rows[-1]["input"] = now - self._end - (self.callback_time - self._callbacks_at_end)
        if self.seen == self.warmup and self.trace and not self._tracing:
            backend.trace_start(self.trace_dir)
            self._tracing = True
        self._callbacks_at_begin = self.callback_time
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None:
            float(keras.ops.convert_to_numpy(loss))  # wait for the step: asynchronous backends return at once
        end = time.perf_counter()
        self.seen += 1
        if self.seen > self.warmup:  # the others' begin hooks ran inside [begin, end]: not the step's time
            self.rows.append({"step": end - self._begin - (self.callback_time - self._callbacks_at_begin),
                              "input": None})
        if self._tracing and self.seen >= self.warmup + self.trace:
            backend.trace_stop()
            self._tracing = False
        if len(self.rows) > self.steps:  # the last row only completes the one before it (its input)
            self.model.stop_training = True
        self._callbacks_at_end = self.callback_time
        self._end = time.perf_counter()

    def on_train_end(self, logs=None):
        if self._tracing:
            backend.trace_stop()
            self._tracing = False

    def _feed_alone(self, n: int) -> float:
        """Seconds per batch to produce the training input without training: slicing (and moving to the
        device) arrays, or decoding a folder's images."""
        x, bs = self.data.x_train, self.t.batch_size
        n = max(1, min(n, -(-len(x) // bs)))
        start = time.perf_counter()
        if isinstance(x, np.ndarray):
            order = np.random.default_rng(0).permutation(len(x))
            for i in range(n):
                keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(x[order[i * bs:(i + 1) * bs]]))
        else:
            from cnnrun.data.folder import Batches

            batches = Batches(x, self.data.y_train, bs)
            for i in range(n):
                batches[i]
        return (time.perf_counter() - start) / n

    def verdict(self, fitted) -> tuple[str, dict]:
        """('ok', the timings) or ('failed', why): a timing run ends here, with no evaluation."""
        rows = [r for r in self.rows if r["input"] is not None][:self.steps]
        if not rows:
            return "failed", {"error": f"debug=profile: no step was timed (the run has fewer than "
                                       f"{self.warmup + 1} training steps; lower hooks.profile.warmup)"}
        # With trainer.steps_per_execution=N, Keras calls the batch hooks once per compiled call of N steps:
        # each timed row covers N steps, so every figure is divided by N to stay per training step.
        per = int(self.model.steps_per_execution or 1)  # trainer.steps_per_execution as resolved (auto)
        extra = self.callback_time / max(1, self.seen) / per
        phases = {"step": [r["step"] / per for r in rows], "input": [(r["input"] or 0.0) / per for r in rows]}
        ms = {k: 1000 * statistics.median(v) for k, v in phases.items()}
        ms["callbacks"] = 1000 * extra
        total = sum(ms.values())
        summary = {
            "backend": backend.name(), "device": backend.device(), "batch_size": self.t.batch_size,
            "warmup_steps": self.warmup * per, "timed_steps": len(rows) * per, "steps_per_execution": per,
            "median_ms": {k: round(v, 3) for k, v in ms.items()},
            "share": {k: round(v / total, 4) for k, v in ms.items()},
            "images_per_second": round(self.t.batch_size / (total / 1000), 1),
            "input_alone_ms": round(1000 * self._feed_alone(len(rows)), 3),
            "trace": str(self.trace_dir) if self.trace else None,
        }
        files.write_json(self.run_dir / layout.PROFILE_JSON, summary)
        short = (f" (of {self.steps} asked: the run ended first; raise trainer.epochs)"
                 if len(rows) < self.steps else "")
        calls = f" in {len(rows)} calls of {per}" if per > 1 else ""
        lines = [f"debug=profile: {len(rows) * per} steps{calls}{short} of batch {self.t.batch_size} after "
                 f"{self.warmup * per} warm-up steps ({summary['backend']}, {summary['device']}); times per step", ""]
        lines += [f"  {k:<10} {ms[k]:9.2f} ms  {100 * summary['share'][k]:5.1f} %" for k in ("input", "step", "callbacks")]
        lines += [f"  {'total':<10} {total:9.2f} ms  {summary['images_per_second']:,.0f} images/s", "",
                  f"  the input feed alone: {summary['input_alone_ms']:.2f} ms a batch "
                  "(TensorFlow reads its input inside the step; JAX between steps)"]
        if self.trace:
            lines.append(f"  trace of {self.trace} steps: {self.trace_dir} (tensorboard --logdir {self.trace_dir}, "
                         "profile tab; JAX's *.trace.json.gz opens in ui.perfetto.dev)")
        files.write_text(self.run_dir / layout.PROFILE_TXT, "\n".join(lines) + "\n")
        log.info("\n".join(lines))
        return "ok", {"profile": summary}

"""Backend-specific knobs. THE ONE PLACE that may import TensorFlow (or JAX) directly.

Everything else in cnnrun is backend-neutral Keras 3. What lives here is what Keras has no API
for: CPU thread pools, TensorFlow's deterministic kernels, and naming the device a run used.
"""

from __future__ import annotations

import keras


def name() -> str:
    return keras.backend.backend()


def requirement() -> str:
    """The backend's package pinned to this version (what an exported or logged model needs beside Keras)."""
    from importlib.metadata import PackageNotFoundError, version

    package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(name(), name())
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def set_threads(intra: int, inter: int) -> bool:
    """Sizes TensorFlow's CPU thread pools (0 = TensorFlow's default, one per core). False when too late:
    the pools are fixed once TensorFlow has run anything in this process (e.g. a sweep's second job)."""
    if name() != "tensorflow":
        return False  # JAX sizes its CPU thread pool itself when it starts; it has no supported knob
    import tensorflow as tf  # noqa: PLC0415 - the marked place

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    except RuntimeError:
        return False
    return True


def configure(threads="auto", deterministic: bool = False) -> None:
    """Sets CPU thread pools and kernel determinism; must run before the backend does any work."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        if threads not in (None, "auto"):
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(int(threads))
            except RuntimeError:
                pass  # already initialised in this process (a second run in one sweep): keep the first setting
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    # JAX sizes its CPU thread pool itself when it starts; there is no supported knob to turn here.


def start() -> str:
    """Starts the backend and returns device(). Keras' set_random_seed imports TensorFlow whenever it is
    installed (to seed it too), under JAX as well: importing it here, at start, puts TensorFlow's start-up
    lines where console.start_backend filters them, instead of in the middle of the run."""
    import importlib.util
    import logging

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "Unable to initialize backend 'tpu'"
    # A sweep builds a new model per job in one process, so TensorFlow warns that its functions are traced
    # again: by design here, and the warning says nothing a user can act on. Only that warning is dropped.
    logging.getLogger("tensorflow").addFilter(lambda r: "triggered tf.function retracing" not in r.getMessage())
    if name() != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        import tensorflow  # noqa: F401, PLC0415 - the marked place
    _freeze_what_lives_on()
    return device()


_frozen = False


def _freeze_what_lives_on() -> None:
    """Once per process, before any model exists: what is alive now (Keras', the backend's and Hydra's modules,
    about half a million objects) lives as long as the process, so Python's collector stops scanning it again.
    keras.backend.clear_session() collects before every run (each job of a sweep), and each collection then looks
    at what the runs made, not at the backend: a tenth of a second to half a second less per job."""
    global _frozen
    if not _frozen:
        import gc

        gc.collect()  # garbage now is freed now, not frozen with the rest
        gc.freeze()
        _frozen = True


def device() -> str:
    """A short description of the accelerator the backend computes on, e.g. 'cpu' or 'gpu:NVIDIA H100'."""
    backend = name()
    try:
        if backend == "tensorflow":
            import tensorflow as tf  # noqa: PLC0415 - the marked place

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"gpu:{details.get('device_name', gpus[0].name)}"
            return "cpu"
        if backend == "jax":
            import jax  # noqa: PLC0415 - the marked place

            d = jax.devices()[0]
            return "cpu" if d.platform == "cpu" else f"{d.platform}:{getattr(d, 'device_kind', d)}"
    except Exception:  # noqa: BLE001 - a description is never worth failing a run
        pass
    return "unknown"


def log_prob_gradients(model, x, classes):
    """d log p(class) / d input for each row of `x` (a model ending in a softmax), as a NumPy array: what
    Grad-CAM weighs the feature maps with. Gradients are the backend's own machinery, hence here."""
    import numpy as np  # noqa: PLC0415

    classes = np.asarray(classes, dtype="int32")
    if name() == "jax":
        import jax  # noqa: PLC0415 - the marked place
        import jax.numpy as jnp  # noqa: PLC0415

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def score(inputs):
            probs, _ = model.stateless_call(trainable, frozen, inputs, training=False)
            return jnp.sum(jnp.log(jnp.take_along_axis(probs, classes[:, None], axis=1) + 1e-12))

        return np.asarray(jax.grad(score)(jnp.asarray(x)))
    if name() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        inputs = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            probs = model(inputs, training=False)
            score = tf.reduce_sum(tf.math.log(tf.gather(probs, classes, batch_dims=1) + 1e-12))
        return tape.gradient(score, inputs).numpy()
    raise NotImplementedError(f"gradients on the {name()} backend")


def trace_start(logdir) -> None:
    """Starts the backend's profiler trace into `logdir` (TensorBoard's profile tab reads both; JAX also
    writes a Perfetto trace.json.gz)."""
    if name() == "jax":
        import jax  # noqa: PLC0415 - the marked place

        jax.profiler.start_trace(str(logdir), create_perfetto_trace=True)
    elif name() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        tf.profiler.experimental.start(str(logdir))


def trace_stop() -> None:
    if name() == "jax":
        import jax  # noqa: PLC0415 - the marked place

        jax.profiler.stop_trace()
    elif name() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        tf.profiler.experimental.stop()


def saved_model_predict(path, x):
    """Runs an exported TensorFlow SavedModel's `serve` endpoint on `x` (TensorFlow's own runtime)."""
    import tensorflow as tf  # noqa: PLC0415 - the marked place

    loaded = tf.saved_model.load(str(path))  # held: serve() needs the object's variables alive
    return loaded.serve(tf.constant(x)).numpy()


@keras.saving.register_keras_serializable(package="cnnrun")
class BatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization that trains through TensorFlow's fused kernel where it can.

    Keras 2 used the fused kernel for 4-D float32 inputs; Keras 3 composes batch norm from separate
    ops, and on CPU that alone makes cnn4 train ~1.3x slower than under Keras 2 (bench/keras2.py).
    Same variables, same saved format, same maths (the fused kernel's batch variance is the
    unbiased one, as in Keras 2; over N*H*W values the difference is negligible). Any other case —
    JAX, inference, mixed precision, masks, frozen layers — is Keras' own BatchNormalization.
    """

    def call(self, inputs, training=None, mask=None):
        fusable = (
            training and self.trainable and mask is None and name() == "tensorflow"
            and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center and self.scale
            and self.epsilon >= 1.001e-5 and keras.backend.standardize_dtype(inputs.dtype) == "float32"
        )
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return y


def _fusable(gradient, variable) -> bool:
    """Whether an optimizer's update of `variable` may run as TensorFlow's one fused kernel: a dense float32
    gradient on the TensorFlow backend (JAX's XLA fuses the composed update itself)."""
    if name() != "tensorflow":
        return False
    import tensorflow as tf  # noqa: PLC0415 - the marked place

    return variable.dtype == tf.float32 and not isinstance(gradient, tf.IndexedSlices)


@keras.saving.register_keras_serializable(package="cnnrun")
class Adam(keras.optimizers.Adam):
    """Adam whose update runs as TensorFlow's fused kernel (ResourceApplyAdam) where it can.

    Keras 3 composes Adam's update from about ten ops per variable, each a pass over its values; the
    fused kernel makes one pass, with the same formula in the same order (m += (g - m)(1 - b1),
    v += (g^2 - v)(1 - b2), w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)), so the numbers
    agree to float rounding (bench/speed.py measures the gain). Same variables and config as Keras'
    Adam; amsgrad, JAX, sparse gradients and other dtypes take Keras' own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(b1, step), beta2_power=tf.pow(b2, step),
            lr=tf.cast(learning_rate, dtype), beta1=b1, beta2=b2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))


@keras.saving.register_keras_serializable(package="cnnrun")
class SGD(keras.optimizers.SGD):
    """SGD whose momentum update runs as TensorFlow's fused kernel (ResourceApplyKerasMomentum), with Keras'
    formula (m = momentum m - lr g; w += m, or w += momentum m - lr g with Nesterov); plain SGD, JAX, sparse
    gradients and other dtypes take Keras' own update."""

    def update_step(self, gradient, variable, learning_rate):
        if not self.momentum or not _fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf  # noqa: PLC0415 - the marked place

        dtype = variable.dtype
        m = self.momentums[self._get_variable_index(variable)].value
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=m.handle, lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype), use_nesterov=bool(self.nesterov))


# --- several devices and hosts (cnnrun/training/distribute.py says what for) -----------------------------

def join_processes(coordinator: str | None, num_processes: int | None, process_id: int | None,
                   timeout: int) -> None:
    """Joins this process to a run of several (jax.distributed): by the coordinator given, or, all three None,
    by the cluster's environment (JAX reads Slurm's). Must come before JAX computes anything. `timeout`: the
    seconds without a heartbeat after which the others are told this process is gone and end."""
    import jax  # noqa: PLC0415 - the marked place

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives over TCP
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=int(timeout), initialization_timeout=5 * int(timeout),
                               shutdown_timeout_seconds=int(timeout))


def coordinator() -> str | None:
    """The coordination service's address (host:port) of a run of several processes, as JAX was given or found it."""
    from jax._src import distributed  # noqa: PLC0415 - the marked place: the address it connected to, Slurm's too

    return getattr(distributed.global_state, "coordinator_address", None) or None


def processes() -> tuple[int, int]:
    """(number of processes, this one's index): (1, 0) unless join_processes ran."""
    if name() != "jax":
        return 1, 0
    import jax  # noqa: PLC0415 - the marked place

    return jax.process_count(), jax.process_index()


def local_device_count() -> int:
    if name() == "jax":
        import jax  # noqa: PLC0415 - the marked place

        return jax.local_device_count()
    return 1


def data_parallel(per_process: int) -> int:
    """Sets Keras' distribution to data parallel over the first `per_process` local devices of every process
    (variables replicated, each batch split on its first axis); returns the number of devices in all. Each
    process feeds only its own share of a batch (auto_shard_dataset=False: Keras makes the global batch)."""
    import jax  # noqa: PLC0415 - the marked place

    chosen = []
    for index in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == index), key=lambda d: d.id)
        chosen += mine[:per_process]
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=chosen, auto_shard_dataset=False))
    return len(chosen)


def no_distribution() -> None:
    keras.distribution.set_distribution(None)


def localize(models) -> None:
    """Takes the variables of `models` (and of their optimizers) off the distribution, onto this process's
    default device, with their values: what is evaluated and saved after data-parallel training runs on one
    device of process 0, alone. Keras has no API to undo a variable's layout, hence its `_layout` here."""
    seen = set()
    for model in models:
        variables = list(model.variables)
        if getattr(model, "optimizer", None) is not None:
            variables += list(model.optimizer.variables)
        for v in variables:
            if id(v) in seen:
                continue
            seen.add(id(v))
            import numpy as np  # noqa: PLC0415

            value = np.asarray(v.value)  # replicated on every device: each process holds the whole value
            v._layout = None
            v.assign(value)
        for attr in ("train_function", "test_function", "predict_function"):
            if hasattr(model, attr):
                setattr(model, attr, None)  # compiled for the distributed layout


def _client():
    from jax._src import distributed  # noqa: PLC0415 - the marked place: its key-value store has no public API

    return distributed.global_state.client


def publish(key: str, value: str) -> None:
    """Process 0 tells the others `value` under `key` (the coordination service's key-value store)."""
    _client().key_value_set(key, value)


def wait_for(key: str, seconds: float) -> str:
    """What process 0 published under `key`, waiting up to `seconds`; raises if it never comes (process 0
    gone: the coordination service lives in it, so this ends within the heartbeat timeout)."""
    return _client().blocking_key_value_get(key, int(seconds * 1000))

"""Backend-specific knobs. THE ONE PLACE that may import TensorFlow (or JAX) directly.

Everything else in cnnrun is backend-neutral Keras 3. What lives here is what Keras has no API
for: CPU thread pools, TensorFlow's deterministic kernels, and naming the device a run used.
"""

from __future__ import annotations

import keras


def name() -> str:
    return keras.backend.backend()


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

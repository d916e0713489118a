"""cnnrun's fused kernels (cnnrun/backend.py): BatchNorm, Adam and SGD with momentum train through one
TensorFlow kernel each, and the numbers are Keras' own to float rounding. On JAX they are Keras' own layers
and optimizers (the comparison then holds exactly)."""

import keras
import numpy as np
import pytest

from cnnrun import backend

OPTIMIZERS = {
    "adam": (lambda: keras.optimizers.Adam(1e-3), lambda: backend.Adam(1e-3), "ResourceApplyAdam"),
    "sgd_momentum": (lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: backend.SGD(0.05, momentum=0.9),
                     "ResourceApplyKerasMomentum"),
    "sgd_nesterov": (lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                     lambda: backend.SGD(0.05, momentum=0.9, nesterov=True), "ResourceApplyKerasMomentum"),
}


def net(norm) -> keras.Model:
    """A small conv net with batch norm and no dropout: what differs between the two is only the kernels. No
    bias before batch norm: its gradient is 0 up to rounding, whose sign Adam would turn into steps of lr."""
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv1")(inputs)
    x = norm(name="bn1")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv2")(x)
    x = norm(name="bn2")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))


def trained(norm, optimizer, x, y, steps=10) -> keras.Model:
    keras.backend.clear_session()
    keras.utils.set_random_seed(7)
    model = net(norm)
    model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=steps * 32 // len(x), shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((64, 12, 12, 1), dtype=np.float32), rng.integers(0, 4, 64).astype("int32")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_fused_kernels_train_as_keras_own_ops_do(data, name):
    x, y = data
    theirs, ours, _ = OPTIMIZERS[name]
    a = trained(keras.layers.BatchNormalization, theirs, x, y)
    b = trained(backend.BatchNorm, ours, x, y)
    wa, wb = a.get_weights(), b.get_weights()
    assert [w.shape for w in wa] == [w.shape for w in wb]  # the same variables, moving statistics included
    # 10 steps: float rounding in another order. Seen: 2e-5 (each optimizer; the moving variance, updated from
    # the unbiased batch variance, included). Adam turns a gradient near 0 into a step of up to lr either way,
    # so in longer runs single weights may part by a few lr.
    gap = max(float(np.max(np.abs(p - q))) for p, q in zip(wa, wb))
    assert gap < 1e-4, gap
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-4)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's kernels")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_train_step_runs_the_fused_kernels(data, name):
    import tensorflow as tf

    x, y = data
    _, ours, kernel = OPTIMIZERS[name]
    model = trained(backend.BatchNorm, ours, x, y, steps=2)
    step = tf.function(lambda xb, yb: model.train_step((xb, yb)))
    kinds = {op.type for op in step.get_concrete_function(tf.constant(x[:32]), tf.constant(y[:32])).graph.get_operations()}
    assert kernel in kinds and "FusedBatchNormV3" in kinds, sorted(kinds)
    assert "Sqrt" not in kinds  # Keras' composed Adam update (and batch norm's) is gone from the step


def test_the_article_optimizers_are_the_fused_ones(cfg_factory):
    from cnnrun.training.optim import build_optimizer

    for option, cls in (("adam", backend.Adam), ("sgd", backend.SGD)):
        cfg = cfg_factory(f"optimizer={option}")
        optimizer = build_optimizer(cfg.optimizer, total_steps=10)
        assert type(optimizer) is cls and isinstance(optimizer, getattr(keras.optimizers, cls.__name__))

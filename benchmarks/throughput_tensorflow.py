"""Hand-written TensorFlow contenders of the benchmark: ``tf-function`` and the floor ``tf-xla``.

Both share one model, one Adam and one test estimate (``tf_vae``): ``tf-function`` is a
``tf.function`` step without XLA, ``tf-xla`` one ``jit_compile=True`` step fed one batch shape.
"""

import numpy as np
from throughput_common import (
    ADAM_BETA_1,
    ADAM_BETA_2,
    ADAM_EPSILON,
    batch_starts,
    init_params,
    padded_batches,
)


def tf_vae(args):
    """``(per_example_negative_elbo, apply_adam)`` on ``tf.Variable`` s, shared by both TF loops.

    ``apply_adam(loss, tape)`` takes the gradient of ``loss`` on ``tape`` and updates the weights.
    """
    import tensorflow as tf

    tf.random.set_seed(args.seed)
    noise = tf.random.Generator.from_seed(args.seed)
    params = {k: tf.Variable(v, name=k) for k, v in init_params(args.seed).items()}
    m = {k: tf.Variable(tf.zeros_like(v)) for k, v in params.items()}
    v = {k: tf.Variable(tf.zeros_like(v)) for k, v in params.items()}
    step = tf.Variable(0.0)

    def per_example_negative_elbo(x):
        x = tf.reshape(x, (tf.shape(x)[0], -1))  # (B, 784)
        h = tf.nn.relu(x @ params["encoder_hidden/kernel"] + params["encoder_hidden/bias"])
        z_mean = h @ params["z_mean/kernel"] + params["z_mean/bias"]  # (B, 20)
        z_log_var = h @ params["z_log_var/kernel"] + params["z_log_var/bias"]
        eps = noise.normal(tf.shape(z_mean))
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        h = tf.nn.relu(z @ params["decoder_hidden/kernel"] + params["decoder_hidden/bias"])
        logits = h @ params["logits/kernel"] + params["logits/bias"]  # (B, 784)
        reconstruction = tf.reduce_sum(tf.nn.softplus(logits) - x * logits, axis=-1)
        kl = 0.5 * tf.reduce_sum(tf.square(z_mean) + tf.exp(z_log_var) - 1.0 - z_log_var, axis=-1)
        return reconstruction + kl  # (B,)

    def apply_adam(loss, tape):
        gradients = tape.gradient(loss, list(params.values()))
        step.assign_add(1.0)
        rate = args.learning_rate * tf.sqrt(1 - ADAM_BETA_2**step) / (1 - ADAM_BETA_1**step)
        for k, g in zip(params, gradients, strict=True):
            m[k].assign(ADAM_BETA_1 * m[k] + (1 - ADAM_BETA_1) * g)
            v[k].assign(ADAM_BETA_2 * v[k] + (1 - ADAM_BETA_2) * tf.square(g))
            params[k].assign_sub(rate * m[k] / (tf.sqrt(v[k]) + ADAM_EPSILON))

    return per_example_negative_elbo, apply_adam


def tf_test_negative_elbo(per_example_negative_elbo):
    """The test-set -ELBO of a TensorFlow loop, one sample of ``z`` per digit."""
    import tensorflow as tf

    return lambda x_test: float(tf.reduce_mean(tf.function(per_example_negative_elbo)(x_test)))


def make_tf_function(x_train, args):
    """``(train_epoch, test_negative_elbo)`` for the hand-written TensorFlow loop."""
    import tensorflow as tf

    per_example_negative_elbo, apply_adam = tf_vae(args)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_example_negative_elbo(x))
        apply_adam(loss, tape)
        return loss

    dataset = (
        tf.data.Dataset.from_tensor_slices(x_train)
        .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    def train_epoch():
        for batch in dataset:
            loss = train_step(batch)
        loss.numpy()

    return train_epoch, tf_test_negative_elbo(per_example_negative_elbo)


def make_tf_xla(x_train, args):
    """``(train_epoch, test_negative_elbo)``: ``tf.function(jit_compile=True)``, one batch shape."""
    import tensorflow as tf

    per_example_negative_elbo, apply_adam = tf_vae(args)
    batch_shape = (args.batch_size, *x_train.shape[1:])

    @tf.function(
        jit_compile=True,
        input_signature=[
            tf.TensorSpec(batch_shape, tf.float32),
            tf.TensorSpec((args.batch_size,), tf.float32),
        ],
    )
    def train_step(x, mask):
        with tf.GradientTape() as tape:
            per_example = per_example_negative_elbo(x)
            loss = tf.reduce_sum(mask * per_example) / tf.reduce_sum(mask)
        apply_adam(loss, tape)
        return loss

    n = len(x_train)
    _, padded = padded_batches(n, args.batch_size)
    rng = np.random.default_rng(args.seed)
    mask = (np.arange(padded) < n).astype(np.float32)

    def train_epoch():
        order = rng.permutation(n)
        order = np.concatenate([order, order[: padded - n]])  # pad with real examples
        for first in batch_starts(padded, args.batch_size):
            rows = slice(first, first + args.batch_size)
            loss = train_step(x_train[order[rows]], mask[rows])
        loss.numpy()

    return train_epoch, tf_test_negative_elbo(per_example_negative_elbo)

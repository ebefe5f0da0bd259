"""Hand-written JAX contenders of the throughput benchmark: ``jax-jit`` and the floor ``jax-scan``.

Both share one model and one Adam (``jax_vae``): ``jax-jit`` dispatches one jitted step per
batch, ``jax-scan`` fuses a whole epoch into one ``jax.lax.scan``.
"""

import functools

import numpy as np
from throughput_common import (
    ADAM_BETA_1,
    ADAM_BETA_2,
    ADAM_EPSILON,
    batch_starts,
    init_params,
    padded_batches,
)


def jax_vae(args):
    """``(per_example_negative_elbo, adam, params, adam_state)``, shared by both JAX loops."""
    import jax
    import jax.numpy as jnp

    def per_example_negative_elbo(params, x, key):
        x = x.reshape((x.shape[0], -1))  # (B, 784)
        h = jax.nn.relu(x @ params["encoder_hidden/kernel"] + params["encoder_hidden/bias"])
        z_mean = h @ params["z_mean/kernel"] + params["z_mean/bias"]  # (B, 20)
        z_log_var = h @ params["z_log_var/kernel"] + params["z_log_var/bias"]
        eps = jax.random.normal(key, z_mean.shape)
        z = z_mean + jnp.exp(0.5 * z_log_var) * eps
        h = jax.nn.relu(z @ params["decoder_hidden/kernel"] + params["decoder_hidden/bias"])
        logits = h @ params["logits/kernel"] + params["logits/bias"]  # (B, 784)
        reconstruction = jnp.sum(jax.nn.softplus(logits) - x * logits, axis=-1)
        kl = 0.5 * jnp.sum(jnp.square(z_mean) + jnp.exp(z_log_var) - 1.0 - z_log_var, axis=-1)
        return reconstruction + kl  # (B,)

    def adam(params, gradients, state):
        step, m, v = state
        step = step + 1
        t = step.astype(jnp.float32)
        m = jax.tree.map(lambda m, g: ADAM_BETA_1 * m + (1 - ADAM_BETA_1) * g, m, gradients)
        v = jax.tree.map(lambda v, g: ADAM_BETA_2 * v + (1 - ADAM_BETA_2) * g * g, v, gradients)
        rate = args.learning_rate * jnp.sqrt(1 - ADAM_BETA_2**t) / (1 - ADAM_BETA_1**t)
        params = jax.tree.map(
            lambda p, m, v: p - rate * m / (jnp.sqrt(v) + ADAM_EPSILON), params, m, v
        )
        return params, (step, m, v)

    params = {k: jnp.asarray(v) for k, v in init_params(args.seed).items()}
    zeros = jax.tree.map(jnp.zeros_like, params)
    adam_state = (jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))
    return per_example_negative_elbo, adam, params, adam_state


def make_jax_jit(x_train, args):
    """``(train_epoch, test_negative_elbo)`` for the hand-written JAX loop."""
    import jax
    import jax.numpy as jnp

    per_example_negative_elbo, adam, params, state = jax_vae(args)

    def negative_elbo(params, x, key):
        return jnp.mean(per_example_negative_elbo(params, x, key))

    # The step's noise key is derived inside the step from the step count, so the loop
    # dispatches one computation per batch; params and Adam state are updated in place.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, state, x, key):
        step_key = jax.random.fold_in(key, state[0])
        loss, gradients = jax.value_and_grad(negative_elbo)(params, x, step_key)
        params, state = adam(params, gradients, state)
        return params, state, loss

    evaluate = jax.jit(negative_elbo)
    key = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)

    def train_epoch():
        nonlocal params, state
        order = rng.permutation(len(x_train))
        for first in batch_starts(len(x_train), args.batch_size):
            batch = x_train[order[first : first + args.batch_size]]
            params, state, loss = train_step(params, state, batch, key)
        loss.block_until_ready()

    def test_negative_elbo(x_test):
        return float(evaluate(params, x_test, jax.random.fold_in(key, state[0] + 1)))

    return train_epoch, test_negative_elbo


def make_jax_scan(x_train, args):
    """``(train_epoch, test_negative_elbo)``: a whole epoch as one ``jax.lax.scan`` call."""
    import jax
    import jax.numpy as jnp

    n = len(x_train)
    steps, padded = padded_batches(n, args.batch_size)
    per_example_negative_elbo, adam, params, state = jax_vae(args)

    def masked_loss(params, x, mask, key):
        return jnp.sum(mask * per_example_negative_elbo(params, x, key)) / jnp.sum(mask)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def epoch(params, state, x_all, key):
        key, shuffle_key = jax.random.split(key)
        order = jax.random.permutation(shuffle_key, n)
        order = jnp.concatenate([order, order[: padded - n]])  # pad with real examples
        mask = (jnp.arange(padded) < n).astype(jnp.float32)
        batches = x_all[order].reshape(steps, args.batch_size, -1)

        def train_step(carry, batch):
            params, state = carry
            x, batch_mask = batch
            step_key = jax.random.fold_in(key, state[0])
            loss, gradients = jax.value_and_grad(masked_loss)(params, x, batch_mask, step_key)
            return adam(params, gradients, state), loss

        (params, state), losses = jax.lax.scan(
            train_step, (params, state), (batches, mask.reshape(steps, -1))
        )
        return params, state, key, losses[-1]

    key = jax.random.key(args.seed)
    x_all = jnp.asarray(x_train.reshape(n, -1))  # the whole split lives on the device

    def train_epoch():
        nonlocal params, state, key
        params, state, key, loss = epoch(params, state, x_all, key)
        loss.block_until_ready()

    def test_negative_elbo(x_test):
        x = jnp.asarray(x_test)
        return float(jnp.mean(per_example_negative_elbo(params, x, jax.random.fold_in(key, 1))))

    return train_epoch, test_negative_elbo

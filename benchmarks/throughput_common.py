"""What every contender of ``train_throughput.py`` trains: the VAE's sizes, its first weights, Adam.

Each contender module (``throughput_kvae``, ``throughput_jax``, ``throughput_tensorflow``,
``throughput_torch``) imports only this module and its own framework, so it reads alone.
"""

import resource
import sys

import numpy as np

LATENT_DIM = 20
HIDDEN = 400
PIXELS = 784


def peak_rss_mb():
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def batch_starts(n, batch_size):
    return range(0, n, batch_size)


def glorot_uniform(rng, fan_in, fan_out):
    """Keras's default kernel initialiser, so the hand-written floors start where kvae does."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


def init_params(seed):
    """Weights of the 784-400-20-400-784 VAE as numpy arrays; biases start at zero."""
    rng = np.random.default_rng(seed)
    shapes = {
        "encoder_hidden": (PIXELS, HIDDEN),
        "z_mean": (HIDDEN, LATENT_DIM),
        "z_log_var": (HIDDEN, LATENT_DIM),
        "decoder_hidden": (LATENT_DIM, HIDDEN),
        "logits": (HIDDEN, PIXELS),
    }
    params = {}
    for name, (fan_in, fan_out) in shapes.items():
        params[f"{name}/kernel"] = glorot_uniform(rng, fan_in, fan_out)
        params[f"{name}/bias"] = np.zeros(fan_out, np.float32)
    return params


# Adam as in Kingma & Ba (2015), Algorithm 1, with Keras's default epsilon.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


def padded_batches(n, batch_size):
    """``(steps, padded)``: batches per epoch, and ``n`` rounded up to whole batches.

    The compiled floors see one batch shape only: the short last batch is padded
    with copies of real examples and masked out of the loss, so every example is
    still trained on exactly once per epoch and nothing recompiles.
    """
    steps = -(-n // batch_size)
    return steps, steps * batch_size

"""The reparameterisation trick as a Keras layer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kvae")
class Sampling(keras.layers.Layer):
    """Draws ``z ~ N(z_mean, exp(z_log_var))`` as a differentiable function.

    ``z = z_mean + exp(0.5 * z_log_var) * eps`` with ``eps ~ N(0, I)``: the
    randomness sits in ``eps``, which does not depend on the encoder, so
    gradients flow through ``z_mean`` and ``z_log_var`` (Kingma & Welling
    2014, Section 2.4). ``eps`` comes from a ``SeedGenerator`` owned by the
    layer: its state is a variable, so the JAX backend can carry it between
    steps, and an unseeded random op would fail under JAX tracing.

    Example:

    >>> z = Sampling(seed=0)(ops.zeros((4, 2)), ops.zeros((4, 2)))
    >>> tuple(z.shape)
    (4, 2)

    Args:
        seed: an int for reproducible noise, or None.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean, z_log_var):
        # float32 even under a mixed-precision policy: the same seed gives the
        # same eps, and exp() of a large z_log_var does not overflow float16.
        z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        eps = keras.random.normal(ops.shape(z_mean), dtype="float32", seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def build(self, z_mean_shape, z_log_var_shape):
        # Nothing to create. Named after call()'s arguments so that Keras records
        # the shapes under these keys, the ones compute_output_shape (and so
        # model.summary()) is called with.
        self.built = True

    def compute_output_shape(self, z_mean_shape, z_log_var_shape):
        return z_mean_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

"""TensorFlow: record the forward pass on a ``GradientTape``, then apply; XLA compiles the step.

XLA compiles a function for one input shape and compiles it again for every
other shape it meets. Most epochs end with a short batch (8,000 digits in
batches of 128 leave 64), which would cost a second compilation of the whole
step. So the step pads every batch up to the largest batch of the current
``fit``, repeating the batch's own examples, and gives the repeats zero weight
in the loss and in the metrics: one shape, one compilation, the same averages.
Layers or terms that use statistics of the whole batch (``BatchNormalization``,
``free_bits``) see the repeats in that one short batch per epoch.

Keras's own ``jit_compile`` would instead compile its outer loop, once per
batch shape (and, on a CPU, Keras leaves it off). kvae turns that off and
compiles the padded step itself, unless ``compile(jit_compile=False)`` or
``run_eagerly=True`` asks for no XLA.
"""

import tensorflow as tf

from kvae.backends.batches import masked_mean, unpack_images


class TensorFlowTrainStep:
    """``train_step``/``test_step`` for TensorFlow.

    Contract: the model defines ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar, the batch mean of ``terms["loss"]``; ``terms`` a dict
    of per-example (B,) values keyed by metric name) and
    ``update_metrics(terms, mask) -> logs``; ``trainable_variables`` are what
    the loss reaches. Variables read inside ``compute_terms`` (``beta``) are
    read afresh at every step of the graph.
    """

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        xla = kwargs.get("jit_compile", "auto") is not False and not self.run_eagerly
        self.jit_compile = False  # the outer loop stays a graph (see the module's docstring)
        self.padded_train_step = self.train_step_on
        if xla:
            self.padded_train_step = tf.function(self.train_step_on, jit_compile=True)
        # Built now, not by the first step: a tf.function that creates variables traces twice.
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        # Not a Keras weight: neither saved nor counted by summary().
        self.largest_batch = tf.Variable(0, trainable=False, dtype=tf.int32)

    def fit(self, *args, **kwargs):
        self.largest_batch.assign(0)  # each fit pads to its own batch size
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        x, mask = self.padded(unpack_images(data))
        terms = self.padded_train_step(x, mask)
        return self.update_metrics(terms, mask)

    def padded(self, x):
        """``x`` padded with its own rows to the largest batch so far; the mask of real rows."""
        size = tf.maximum(self.largest_batch, tf.shape(x)[0])
        self.largest_batch.assign(size)
        rows = tf.range(size)
        return tf.gather(x, rows % tf.shape(x)[0]), tf.cast(rows < tf.shape(x)[0], "float32")

    def train_step_on(self, x, mask):
        """One step on a padded batch: the loss is the mean over the real rows only."""
        with tf.GradientTape() as tape:
            _, terms = self.compute_terms(x, training=True)
            loss = masked_mean(terms["loss"], mask)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return terms

    def test_step(self, data):
        # Evaluation takes no gradient and is not padded: no XLA, no compilation per shape.
        _, terms = self.compute_terms(unpack_images(data), training=False)
        return self.update_metrics(terms)

"""TensorFlow: record the forward pass on a ``GradientTape``, then apply; XLA where it pays.

Keras's ``jit_compile="auto"`` turns XLA on where it pays, on a GPU, and
leaves it off on a CPU (on a 2-core CPU, XLA inside Keras's loop saved CPU
time but not wall-clock time: ``benchmarks/README.md``). ``compile(jit_compile=True)``
asks for it anywhere.

XLA compiles a function for one input shape and compiles it again for every
other shape it meets. Most epochs end with a short batch (8,000 digits in
batches of 128 leave 64), which would cost a second compilation of the whole
step. So when XLA is on, the step pads every batch up to the largest batch of
the current ``fit``, repeating the batch's own examples, and gives the repeats
zero weight in the loss and in the metrics: one shape, one compilation, the
same averages. Layers or terms that use statistics of the whole batch
(``BatchNormalization``, ``free_bits``) see the repeats in that one short batch
per epoch. Keras's own XLA would compile its outer loop once per batch shape,
so kvae turns that off and compiles the padded step itself.
"""

import tensorflow as tf

from kvae.backends.batches import masked_mean


class TensorFlowTrainStep:
    """``train_step``/``test_step`` for TensorFlow.

    Contract: the model defines ``unpack(batch)``, what ``compute_terms``
    reads of a batch (images, or a tuple such as ``(images, labels)``),
    ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar; ``terms`` a dict of per-example (B,) values keyed by
    metric name; a padded batch replaces the mean of ``terms["loss"]`` in
    ``loss`` by its mean over the real rows and keeps the rest of ``loss``),
    ``with_losses``, which adds the regularisation losses, and
    ``update_metrics(terms, mask) -> logs``; ``trainable_variables`` are what
    the loss reaches. Variables read inside ``compute_terms`` (``beta``) are
    read afresh at every step of the graph.
    """

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        self.xla_train_step = None  # the padded step, compiled with XLA, if XLA is on
        if self.jit_compile:  # as Keras resolved it: "auto" is True on a GPU
            self.xla_train_step = tf.function(self.train_step_on, jit_compile=True)
            self.jit_compile = False  # Keras's outer loop stays a graph
        # Built now, not by the first step: a tf.function that creates variables traces twice.
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        # Not a Keras weight: neither saved nor counted by summary().
        self.largest_batch = tf.Variable(0, trainable=False, dtype=tf.int32)

    def fit(self, *args, **kwargs):
        self.largest_batch.assign(0)  # each fit pads to its own batch size
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        x, mask = self.unpack(data), None
        if self.xla_train_step is None:
            return self.update_metrics(self.train_step_on(x, mask))
        x, mask = self.padded(x)  # one shape for XLA
        return self.update_metrics(self.xla_train_step(x, mask), mask)

    def padded(self, x):
        """``x`` padded with its own rows to the largest batch so far; the mask of real rows.

        ``x`` is a tensor or a tuple of tensors with one row per example
        (``(images, labels)``): each is padded with the same rows.
        """
        real = tf.shape(tf.nest.flatten(x)[0])[0]
        size = tf.maximum(self.largest_batch, real)
        self.largest_batch.assign(size)
        rows = tf.range(size)
        padded = tf.nest.map_structure(lambda t: tf.gather(t, rows % real), x)
        return padded, tf.cast(rows < real, "float32")

    def train_step_on(self, x, mask):
        """One step; on a padded batch (``mask`` given) the loss is the mean over its real rows."""
        with tf.GradientTape() as tape:
            loss, terms = self.with_losses(self.compute_terms(x, training=True))
            if mask is not None:
                # Swap the padded batch's mean for the real rows' mean; what the
                # loss adds beyond that mean (a subclass's own penalty) stays.
                per_example = terms["loss"]
                loss = loss - tf.reduce_mean(per_example) + masked_mean(per_example, mask)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return terms

    def test_step(self, data):
        # Evaluation takes no gradient and runs as a plain graph: nothing compiles per shape.
        _, terms = self.with_losses(self.compute_terms(self.unpack(data), training=False))
        return self.update_metrics(terms)

"""Per-backend gradient plumbing for ``kvae.models``.

Each module defines one mixin (``TensorFlowTrainStep``, ``JaxTrainStep``,
``TorchTrainStep``) with ``train_step`` and
``test_step`` for one backend; ``kvae.models`` imports the one Keras runs on.
All three compute the loss with the same call,
``loss, terms = self.with_losses(self.compute_terms(x, training=...))`` (the
model's objective, plus the networks' regularisation losses), and differ only
in how they take its gradient and carry state. Like Keras's own trainers they scale
the loss with ``self.optimizer.scale_loss`` before differentiating (mixed
precision's ``LossScaleOptimizer`` unscales the gradients in ``apply``).
"""

from kvae.config import BACKENDS  # noqa: F401  (the one list of supported backends)

"""Two VAEs built to show posterior collapse, as chapter 06 trains them.

- ``PixelAveragedVAE``: the common bug, on purpose. The reconstruction is
  averaged over the pixels instead of summed, which weighs the KL 784 times
  more than the ELBO does.
- ``SeeingDecoderVAE``: a decoder that reads, besides ``z``, a half-resolution
  copy of the image it reconstructs (``coarse_view``). The code then has less
  to carry, even at ``beta = 1``. Its reconstruction is ``-log p(x | z, view)``,
  so its ELBO bounds ``log p(x | view)``, not ``log p(x)``.

``kvae.pretrained`` ships converged models of both.
"""

import keras
from keras import ops

from kvae import elbo
from kvae.models import VAE
from kvae.networks import build_decoder

PIXELS = 28 * 28
VIEW = 14 * 14  # pixels of the half-resolution copy


class PixelAveragedVAE(VAE):
    """A VAE whose reconstruction is averaged over the pixels (nats per pixel)."""

    def reconstruction(self, x, z, training):
        return super().reconstruction(x, z, training) / PIXELS  # (B,)


def coarse_view(x):
    """The image at half resolution, (B, 28, 28, 1) -> (B, 196): each 2x2 block averaged."""
    return ops.reshape(ops.average_pool(x, 2, 2), (-1, VIEW))


class SeeingDecoder(keras.Model):
    """Decodes ``z`` together with a half-resolution view of the image (blank if none is given)."""

    def __init__(self, latent_dim, hidden=(256,), **kwargs):
        super().__init__(**kwargs)
        self.network = build_decoder(latent_dim + VIEW, hidden=tuple(hidden))

    def call(self, z, view=None, training=False):
        if view is None:  # decoding a bare code, as the model's own checks do
            view = ops.zeros((ops.shape(z)[0], VIEW), dtype=z.dtype)
        return self.network(ops.concatenate([z, view], axis=-1), training=training)


class SeeingDecoderVAE(VAE):
    """A VAE whose decoder reads ``z`` and a half-resolution copy of the image it reconstructs."""

    def reconstruction(self, x, z, training):
        logits = self.decoder(z, view=coarse_view(x), training=training)
        return elbo.reconstruction(x, logits)  # (B,)

    def call(self, x, training=False):
        z_mean, _ = self.encoder(x, training=training)
        return ops.sigmoid(self.decoder(z_mean, view=coarse_view(x), training=training))

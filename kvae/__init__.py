"""kvae: Variational Autoencoders in Keras 3, on TensorFlow, JAX and PyTorch.

Set ``KERAS_BACKEND`` before importing: Keras reads it once.
"""

from kvae import elbo, linear_gaussian
from kvae.data import load_mnist
from kvae.layers import Sampling
from kvae.models import AE, VAE
from kvae.networks import IMAGE_SHAPE, build_decoder, build_encoder

__version__ = "0.1.0"
__all__ = [
    "AE",
    "IMAGE_SHAPE",
    "Sampling",
    "VAE",
    "build_decoder",
    "build_encoder",
    "elbo",
    "linear_gaussian",
    "load_mnist",
]

"""kvae: Variational Autoencoders in Keras 3, on TensorFlow, JAX and PyTorch.

Set ``KERAS_BACKEND`` before importing Keras: it is read once. ``import kvae``
itself loads nothing heavy; each name below is imported on first use (PEP 562),
so the ``kvae`` command can choose the backend after ``import kvae``.
"""

import importlib

# name -> the module that defines it
_EXPORTS = {
    "AE": "kvae.models",
    "VAE": "kvae.models",
    "Sampling": "kvae.layers",
    "IMAGE_SHAPE": "kvae.networks",
    "build_decoder": "kvae.networks",
    "build_encoder": "kvae.networks",
    "claims": "kvae.claims",
    "load_mnist": "kvae.data",
    "elbo": "kvae.elbo",
    "linear_gaussian": "kvae.linear_gaussian",
}

__version__ = "0.1.0"
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kvae' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"kvae.{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])

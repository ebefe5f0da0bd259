"""kvae: Variational Autoencoders in Keras 3, on TensorFlow, JAX and PyTorch.

Set ``KERAS_BACKEND`` before importing Keras: it is read once. ``import kvae``
itself loads nothing heavy; each name below is imported on first use (PEP 562),
so the ``kvae`` command can choose the backend after ``import kvae``.

Loading a saved model needs ``kvae.VAE``, ``kvae.AE``, ``kvae.ConditionalVAE``
and ``kvae.Sampling`` registered with Keras, which imports only its own modules
to find classes. So the registering modules are imported as soon as Keras is: at once if Keras
is already loaded, otherwise right after ``import keras`` finishes (a one-shot
import hook), and ``keras.saving.load_model`` works in either import order.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from kvae.config import BACKENDS  # imports no Keras

# name -> the module that defines it
_EXPORTS = {
    "AE": "kvae.models",
    "VAE": "kvae.models",
    "ConditionalVAE": "kvae.conditional",
    "Sampling": "kvae.layers",
    "IMAGE_SHAPE": "kvae.data",
    "build_decoder": "kvae.networks",
    "build_encoder": "kvae.networks",
    "callbacks": "kvae.callbacks",
    "claims": "kvae.claims",
    "judge": "kvae.judge",
    "samplers": "kvae.samplers",
    "GaussianMixtureSampler": "kvae.samplers",
    "AggregatePosteriorSampler": "kvae.samplers",
    "PerClassSampler": "kvae.samplers",
    "load_mnist": "kvae.data",
    "elbo": "kvae.elbo",
    "linear_gaussian": "kvae.linear_gaussian",
    "pretrained": "kvae.pretrained",
    "set_seed": "kvae.seeding",
    "tables": "kvae.tables",
    "variants": "kvae.variants",
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


def _register_with_keras():
    """Import the modules that register kvae's classes, on the backends kvae runs on.

    On another backend nothing is imported here, so ``import keras`` still
    works; using ``kvae.VAE`` there raises kvae.models' one-line error.
    """
    if sys.modules["keras"].backend.backend() in BACKENDS:
        importlib.import_module("kvae.conditional")  # registers ConditionalVAE, VAE, AE, Sampling


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds ``keras`` through the other finders, then registers kvae once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(name)
        run_keras = spec.loader.exec_module

        def exec_module(module):
            run_keras(module)
            _register_with_keras()

        spec.loader.exec_module = exec_module  # this spec's own loader object
        return spec


if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())

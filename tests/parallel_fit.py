"""Train a small VAE with ``kvae.train.fit`` and write what it measured; run as a script.

The data-parallel tests (``test_distribution.py``) run this in subprocesses,
because JAX reads its device count (``XLA_FLAGS``) once, when it starts::

    python tests/parallel_fit.py train OUT --devices 2 [--bugs same_noise ...]
    python tests/parallel_fit.py encode OUT/model.keras OUT/codes.npz
    python tests/parallel_fit.py process OUT --rank 0 --port 12345  # and --rank 1

``train`` writes ``OUT/fit.json`` (the history), ``OUT/model.keras`` and
``OUT/codes.npz`` (z_mean and z_log_var of the first test digits). Each of
``--bugs`` then trains again with a data-parallel mistake put in on purpose,
so the tests can show that their tolerance catches it: ``OUT/fit-BUG.json``.
``process`` is one of two processes joined by ``jax.distributed`` on this
machine, set up as README.md says for several hosts: ``OUT/rank-R.json``
holds kvae's refusal of ``devices=2`` there and the history of the model the
two processes train together.
"""

import argparse
import contextlib
import dataclasses
import json
import pathlib

import keras
import numpy as np
from keras import ops

from kvae import train
from kvae.layers import Sampling
from kvae.models import VAE

# Seconds of training: 8 steps of 64 digits per epoch, small networks.
CONFIG = {"epochs": 2, "train_size": 512, "batch_size": 64, "hidden": (64,), "latent_dim": 4}
CONFIG |= {"map_epochs": 0, "mixture_components": 4, "seed": 0}
TEST_DIGITS = 512  # validation digits per epoch; also divides evenly across devices
CODED_DIGITS = 32  # test digits whose codes are compared after loading


def config(devices):
    return train.TrainConfig(devices=devices, **CONFIG)


def data(config):
    loaded = train.load_data(config)
    x_test, y_test = loaded["test"]
    return {**loaded, "test": (x_test[:TEST_DIGITS], y_test[:TEST_DIGITS])}


def same_noise(devices):
    """Each device's share of the batch gets the same eps, as with one seed per device."""

    def call(self, z_mean, z_log_var):
        share = (ops.shape(z_mean)[0] // devices, ops.shape(z_mean)[1])
        eps = keras.random.normal(share, dtype="float32", seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * ops.tile(eps, (devices, 1))

    return Sampling, "call", call


def one_share_gradient(devices):
    """The gradient of the first device's share only; the loss's values stay whole."""
    compute_terms = VAE.compute_terms

    def call(self, x, training=False):
        _, terms = compute_terms(self, x, training)
        first_share = ops.arange(ops.shape(x)[0]) < ops.shape(x)[0] // devices
        loss = ops.where(first_share, terms["loss"], ops.stop_gradient(terms["loss"]))
        return ops.mean(loss), {**terms, "loss": loss}

    return VAE, "compute_terms", call


BUGS = {"same_noise": same_noise, "one_share_gradient": one_share_gradient}


@contextlib.contextmanager
def bug(name, devices):
    if name is None:
        yield
        return
    owner, attribute, replacement = BUGS[name](devices)
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def run_train(out, devices, bugs):
    one = config(devices)
    loaded = data(one)
    out.mkdir(parents=True, exist_ok=True)
    for name in (None, *bugs):
        with bug(name, devices):
            vae, history = train.fit(one, loaded, verbose=0)
        after = repr(keras.distribution.distribution())  # what fit left set: None expected
        record = {"history": history, "distribution_after": after, "weights_on": weights_on(vae)}
        (out / (f"fit-{name}.json" if name else "fit.json")).write_text(json.dumps(record))
        if name is None:
            vae.save(out / "model.keras")
            write_codes(vae, loaded, out / "codes.npz")


def weights_on(vae):
    """How many devices hold the model's weights (JAX arrays): 1, or each device's replica."""
    return len(vae.trainable_variables[0].value.devices())


def write_codes(vae, loaded, path):
    z_mean, z_log_var = train.encode(vae, loaded["test"][0][:CODED_DIGITS])
    np.savez(path, z_mean=z_mean, z_log_var=z_log_var, backend=keras.backend.backend())


def run_process(out, rank, port, processes=2):
    import jax

    jax.distributed.initialize(f"localhost:{port}", num_processes=processes, process_id=rank)
    one = config(1)  # this process's devices: one; the caller's distribution spans both
    try:
        train.fit(config(2), data(one), verbose=0)
        refusal = None
    except train.ConfigError as error:
        refusal = str(error)
    share = {split: (x[rank::processes], y[rank::processes]) for split, (x, y) in data(one).items()}
    with keras.distribution.DataParallel(auto_shard_dataset=False).scope():
        vae, history = train.fit(dataclasses.replace(one, batch_size=32), share, verbose=0)
    record = {"refusal": refusal, "history": history, "weights_on": weights_on(vae)}
    (out / f"rank-{rank}.json").write_text(json.dumps(record))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("train", "encode", "process"))
    parser.add_argument("path", type=pathlib.Path)
    parser.add_argument("codes", type=pathlib.Path, nargs="?")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--bugs", choices=sorted(BUGS), nargs="*", default=[])
    parser.add_argument("--rank", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.mode == "train":
        run_train(args.path, args.devices, args.bugs)
    elif args.mode == "process":
        run_process(args.path, args.rank, args.port)
    else:
        vae = train.load_model(args.path)
        write_codes(vae, data(config(1)), args.codes)


if __name__ == "__main__":
    main()

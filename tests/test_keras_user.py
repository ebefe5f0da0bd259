"""kvae.VAE does what a Keras user expects of a model, under whichever backend runs.

Small MLPs (hidden=(64,)) on a few hundred real digits keep each test short.
Tests marked ``both`` run for ``kvae.ConditionalVAE`` too, on the same digits
with their labels: ``args``/``data`` give each model what it reads.
"""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kvae
from kvae.callbacks import CyclicalBeta, KLWarmup

DIGITS = 256
BATCH = 32  # 8 batches per epoch of DIGITS
# PyTorch's Keras trainer runs one step per call; the others can group them.
GROUPINGS = [1] if BACKEND == "torch" else [1, 4]


MODELS = ["VAE", "ConditionalVAE"]
both = pytest.mark.parametrize("model", MODELS)  # the contract holds for each model


def networks(model="VAE", hidden=(64,)):
    """A fresh 2-D encoder and decoder for ``model``: a ConditionalVAE's take the label too."""
    classes = {"num_classes": 10} if model == "ConditionalVAE" else {}
    encoder = kvae.build_encoder(2, hidden=hidden, **classes)
    return encoder, kvae.build_decoder(2, hidden=hidden, **classes)


def make_vae(model="VAE", beta=1.0, seed=0, optimizer=None, steps_per_execution=None, **kwargs):
    keras.utils.set_random_seed(seed)
    vae = getattr(kvae, model)(*networks(model), beta=beta, seed=seed, **kwargs)
    grouping = {} if steps_per_execution is None else {"steps_per_execution": steps_per_execution}
    vae.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), **grouping)
    return vae


def args(vae, pair, n=None):
    """What ``vae`` is given positionally (``fit``, ``evaluate``, ``encode``): ``(x,)``, or
    ``(x, y)`` for a ConditionalVAE; the first ``n`` of ``pair = (x, y)``."""
    x, y = (part[:n] for part in pair)
    return (x, y) if isinstance(vae, kvae.ConditionalVAE) else (x,)


def data(vae, pair, n=None):
    """What ``vae`` reads as one argument (``compute_terms``, a stream): ``x`` or ``(x, y)``."""
    given = args(vae, pair, n)
    return given if len(given) == 2 else given[0]


@pytest.fixture(scope="module")
def digits(mnist_train):
    return mnist_train[0][:DIGITS]


@pytest.fixture(scope="module")
def held_out(mnist_test):
    return mnist_test[0][:128]


@pytest.fixture(scope="module")
def train_pair(mnist_train):
    return mnist_train[0][:DIGITS], mnist_train[1][:DIGITS]


@pytest.fixture(scope="module")
def held_out_pair(mnist_test):
    return mnist_test[0][:128], mnist_test[1][:128]


class CountBatches(keras.callbacks.Callback):
    """Counts the training batches run (the last batch index of each call, plus one)."""

    def on_train_begin(self, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches = max(self.batches, batch + 1)


def assert_identity(logs, beta, prefix=""):
    """The logged loss is reconstruction + beta * KL, exactly up to float32 rounding."""
    loss, reconstruction, kl = (
        np.asarray(logs[prefix + name], np.float64)
        for name in ("loss", "reconstruction_loss", "kl_loss")
    )
    np.testing.assert_allclose(loss, reconstruction + np.asarray(beta) * kl, rtol=1e-5)


# 1. beta is state ---------------------------------------------------------------------


class BetaPerEpoch(keras.callbacks.Callback):
    def __init__(self, betas):
        super().__init__()
        self.betas = betas

    def on_epoch_begin(self, epoch, logs=None):
        self.model.beta = self.betas[epoch]


@both
def test_beta_set_by_a_callback_or_between_fits_is_used_and_saved(model, train_pair, held_out_pair):
    betas = [0.0, 3.0, 0.5]
    vae = make_vae(model)
    held_out = data(vae, held_out_pair)
    history = vae.fit(
        *args(vae, train_pair),
        epochs=3,
        batch_size=BATCH,
        validation_data=held_out,
        callbacks=[BetaPerEpoch(betas)],
        verbose=0,
    ).history
    assert_identity(history, betas)
    assert_identity(history, betas, prefix="val_")
    assert vae.beta == 0.5 and vae.get_config()["beta"] == 0.5
    vae.beta = np.float32(50)  # a NumPy scalar, between fits
    again = vae.fit(
        *args(vae, train_pair), epochs=1, batch_size=BATCH, validation_data=held_out, verbose=0
    )
    assert_identity(again.history, [50.0])
    assert_identity(again.history, [50.0], prefix="val_")
    logs = vae.evaluate(*args(vae, held_out_pair), verbose=0, return_dict=True)
    assert_identity(logs, 50.0)
    assert vae.get_config()["beta"] == 50.0
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got True"):
        vae.beta = True


class GroupLogs(keras.callbacks.Callback):
    """Per-call means of each metric, recovered from Keras's running means."""

    def on_epoch_begin(self, epoch, logs=None):
        self.previous = {"batches": 0, "loss": 0.0, "reconstruction_loss": 0.0, "kl_loss": 0.0}

    def on_train_begin(self, logs=None):
        self.groups = []  # (first global step, {metric: mean over the call's batches})
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        seen, before = batch + 1, self.previous
        group = seen - before["batches"]
        means = {}
        for name in ("loss", "reconstruction_loss", "kl_loss"):
            total = float(logs[name]) * seen
            means[name] = (total - before[name] * before["batches"]) / group
            before[name] = float(logs[name])
        before["batches"] = seen
        self.groups.append((self.step, means))
        self.step += group


SCHEDULES = {  # name: (callback, beta at global step s as the paper defines it)
    "linear warm-up": (lambda: KLWarmup(steps=6, beta_max=2.0), lambda s: 2.0 * min(1.0, s / 6)),
    "cyclical": (
        lambda: CyclicalBeta(period=4, ratio=0.5, beta_max=2.0),
        lambda s: 2.0 * min(1.0, (s % 4) / 4 / 0.5),
    ),
}


@both
@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_annealing_takes_effect_at_the_next_call(model, train_pair, schedule, grouping):
    make_callback, beta_at = SCHEDULES[schedule]
    vae = make_vae(model, steps_per_execution=grouping)
    groups = GroupLogs()
    callbacks = [make_callback(), groups]
    vae.fit(*args(vae, train_pair), epochs=2, batch_size=BATCH, callbacks=callbacks, verbose=0)
    assert len(groups.groups) == 16 // grouping
    steps = np.array([step for step, _ in groups.groups])
    loss, reconstruction, kl = (
        np.array([means[name] for _, means in groups.groups])
        for name in ("loss", "reconstruction_loss", "kl_loss")
    )
    beta = np.array([beta_at(s) for s in steps])
    # Differencing float32 running means costs ~1e-3 nats; a stale beta costs >= 0.1.
    np.testing.assert_allclose(loss, reconstruction + beta * kl, atol=0.02)
    stale = np.array([beta_at(s - grouping) if s else 1.0 for s in steps])
    assert np.max(np.abs(loss - (reconstruction + stale * kl))) > 0.1
    assert vae.beta == pytest.approx(beta_at(16 - grouping))


def test_schedules_refuse_bad_arguments():
    for make, message in (
        (lambda: KLWarmup(steps=0), "steps must be a positive integer"),
        (lambda: KLWarmup(steps=10, beta_max=float("inf")), "beta_max must be a finite"),
        (lambda: CyclicalBeta(period=10, ratio=0.0), r"ratio must be a number in \(0, 1\]"),
    ):
        with pytest.raises(ValueError, match=message):
            make()


@both
def test_free_bits_floor_the_loss_but_not_the_reported_kl(model, train_pair, held_out_pair):
    floor = 0.5  # nats per dimension: above an untrained encoder's per-dimension KL
    vae = make_vae(model, beta=2.0, free_bits=np.float64(floor))
    loss, terms = vae.compute_terms(data(vae, held_out_pair, 64))
    reconstruction, kl, logged_loss, loss = to_numpy(
        terms["reconstruction_loss"], terms["kl_loss"], terms["loss"], loss
    )
    z_mean, z_log_var = to_numpy(*vae.encode(*args(vae, held_out_pair, 64)))
    kl_per_dim = 0.5 * (z_mean**2 + np.exp(z_log_var) - 1 - z_log_var)  # (64, 2)
    np.testing.assert_allclose(kl, kl_per_dim.sum(-1), rtol=1e-4)  # the true KL
    floored = np.maximum(kl_per_dim.mean(0), floor).sum()
    np.testing.assert_allclose(loss, reconstruction.mean() + 2.0 * floored, rtol=1e-5)
    np.testing.assert_allclose(logged_loss.mean(), loss, rtol=1e-5)
    assert loss - (reconstruction + 2.0 * kl).mean() > 0.5  # the floor binds here
    clone = type(vae).from_config(vae.get_config())
    assert clone.free_bits == floor and clone.beta == 2.0
    history = vae.fit(*args(vae, train_pair), epochs=1, batch_size=BATCH, verbose=0).history
    assert np.isfinite(history["loss"][0])
    with pytest.raises(ValueError, match="free_bits must be a finite number >= 0"):
        make_vae(model, free_bits=-1.0)


# 2. summary ---------------------------------------------------------------------------


def summary_text(model):
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


@both
def test_summary_before_and_after_fit_and_evaluate(model, train_pair):
    vae = make_vae(model)
    assert "sampling (Sampling)" in summary_text(vae)
    vae.fit(*args(vae, train_pair), epochs=1, batch_size=BATCH, verbose=0)
    vae.evaluate(*args(vae, train_pair, 64), verbose=0)
    text = summary_text(vae)
    assert "sampling (Sampling)" in text and "encoder (Functional)" in text


# 3. save, then load in a fresh process ------------------------------------------------

LOAD = """
import sys
{first}
{second}
import numpy as np
vae = keras.saving.load_model(sys.argv[1])
assert type(vae).__name__ == sys.argv[5], type(vae)
x = np.load(sys.argv[2])
predicted = vae.predict(x if sys.argv[5] == "VAE" else (x, np.load(sys.argv[4])), verbose=0)
np.testing.assert_allclose(predicted, np.load(sys.argv[3]), atol=1e-6)
print(keras.backend.backend(), vae.beta, vae.free_bits)
"""


@both
@pytest.mark.parametrize("order", ["kvae first", "keras first"])
def test_saved_model_loads_in_a_fresh_process(tmp_path, model, train_pair, held_out_pair, order):
    vae = make_vae(model, free_bits=0.25)
    vae.fit(*args(vae, train_pair), epochs=1, batch_size=BATCH, verbose=0)
    vae.beta = 2.5  # the current value is what is saved
    vae.save(tmp_path / "vae.keras")
    np.save(tmp_path / "x.npy", held_out_pair[0][:16])
    np.save(tmp_path / "labels.npy", held_out_pair[1][:16])
    predicted = vae.predict(data(vae, held_out_pair, 16), verbose=0)
    np.save(tmp_path / "y.npy", to_numpy(predicted)[0])
    imports = ["import kvae", "import keras"]
    first, second = imports if order == "kvae first" else imports[::-1]
    script = LOAD.format(first=first, second=second)
    paths = [str(tmp_path / name) for name in ("vae.keras", "x.npy", "y.npy", "labels.npy")]
    result = subprocess.run(
        [sys.executable, "-c", script, *paths, model],
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [BACKEND, "2.5", "0.25"]


# 4. mixed precision -------------------------------------------------------------------


@pytest.fixture
def restore_policy():
    yield
    keras.config.set_dtype_policy("float32")


def one_sgd_step(model, pair, policy):
    keras.config.set_dtype_policy(policy)
    vae = make_vae(model, optimizer=keras.optimizers.SGD(1e-3), steps_per_execution=1)
    before = [to_numpy(w)[0] for w in vae.trainable_weights]
    vae.fit(*args(vae, pair), epochs=1, batch_size=len(pair[0]), verbose=0)
    after = [to_numpy(w)[0] for w in vae.trainable_weights]
    keras.config.set_dtype_policy("float32")
    return np.concatenate([(a - b).ravel() for a, b in zip(after, before, strict=True)])


# Relative L2 error of the update against float32. float16 keeps 11 significant bits
# (rounding 5e-4) and bfloat16 8 (4e-3); one SGD step measured 1.0e-3 and 4.8e-3 under
# PyTorch. The tolerances leave 10x room for the other backends' kernels. An unscaled
# update is 1/32768 of the float32 one: error 1.0.
TOLERANCE = {"mixed_float16": 0.01, "mixed_bfloat16": 0.05}


@both
@pytest.mark.parametrize("policy", sorted(TOLERANCE))
def test_mixed_precision_updates_match_float32(model, train_pair, policy, restore_policy):
    pair = tuple(part[:128] for part in train_pair)
    reference = one_sgd_step(model, pair, "float32")
    mixed = one_sgd_step(model, pair, policy)
    error = np.linalg.norm(mixed - reference) / np.linalg.norm(reference)
    assert error < TOLERANCE[policy], error


# 5. what the networks must be ---------------------------------------------------------


def functional(inputs, outputs):
    return keras.Model(inputs, outputs)


def encoder_with(outputs_of):
    images = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(images)
    return keras.Model(images, outputs_of(h))


def dense(width, **kwargs):
    return keras.layers.Dense(width, **kwargs)


def decoder_with(*layers):
    z = keras.Input((2,))
    h = z
    for layer in layers:
        h = layer(h)
    return keras.Model(z, h)


BAD_NETWORKS = {
    "encoder returns z too": (
        lambda: encoder_with(lambda h: [dense(2)(h), dense(2)(h), dense(2)(h)]),
        lambda: kvae.build_decoder(2, hidden=(8,)),
        r"expected the encoder to return two tensors \[z_mean, z_log_var\].*received "
        r"\[\(2, 2\), \(2, 2\), \(2, 2\)\]",
    ),
    "encoder returns one tensor": (
        lambda: encoder_with(lambda h: dense(4)(h)),
        lambda: kvae.build_decoder(2, hidden=(8,)),
        r"two tensors \[z_mean, z_log_var\].*received \(2, 4\)",
    ),
    "unequal heads": (
        lambda: encoder_with(lambda h: [dense(2)(h), dense(3)(h)]),
        lambda: kvae.build_decoder(2, hidden=(8,)),
        r"same shape \(batch, latent_dim\); received \(2, 2\) and \(2, 3\)",
    ),
    "flat decoder": (
        lambda: kvae.build_encoder(2, hidden=(8,)),
        lambda: decoder_with(dense(784)),
        r"expected the decoder to return logits shaped like the encoder's input, "
        r"\(batch, 28, 28, 1\); received \(2, 784\)",
    ),
    "sigmoid decoder": (
        lambda: kvae.build_encoder(2, hidden=(8,)),
        lambda: decoder_with(dense(784, activation="sigmoid"), keras.layers.Reshape((28, 28, 1))),
        r"expected the decoder to return logits.*activation='sigmoid'",
    ),
    "softmax decoder": (
        lambda: kvae.build_encoder(2, hidden=(8,)),
        lambda: decoder_with(
            dense(784), keras.layers.Activation("softmax"), keras.layers.Reshape((28, 28, 1))
        ),
        r"expected the decoder to return logits.*activation='softmax'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NETWORKS))
def test_networks_are_checked_at_construction(case):
    encoder, decoder, message = BAD_NETWORKS[case]
    with pytest.raises(ValueError, match=message):
        kvae.VAE(encoder(), decoder())


class SubclassedEncoder(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten, self.hidden = keras.layers.Flatten(), dense(32, activation="relu")
        self.mean, self.log_var = dense(2), dense(2)

    def call(self, x):
        h = self.hidden(self.flatten(x))
        return [self.mean(h), self.log_var(h)]


def dynamic_encoder():
    images = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(images)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(images, [dense(2)(h), dense(2)(h)])


@pytest.mark.parametrize("make_encoder", [SubclassedEncoder, dynamic_encoder])
def test_subclassed_and_dynamic_shape_encoders_train_on_arrays(digits, make_encoder):
    keras.utils.set_random_seed(0)
    vae = kvae.VAE(make_encoder(), kvae.build_decoder(2, hidden=(32,)), seed=0)
    vae.compile(optimizer="adam")
    history = vae.fit(digits[:128], epochs=1, batch_size=BATCH, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert np.isfinite(vae.evaluate(digits[:64], verbose=0, return_dict=True)["loss"])
    with pytest.raises(ValueError, match=r"got \(4, 28, 28, 3\)"):
        vae.fit(np.zeros((4, 28, 28, 3), "float32"), verbose=0)


def test_numpy_scalars_are_numbers_and_bools_are_not():
    encoder = kvae.build_encoder(latent_dim=np.int64(2), hidden=(np.int32(8),))
    vae = kvae.VAE(encoder, kvae.build_decoder(np.int64(2), hidden=(8,)), beta=np.float32(1))
    assert vae.beta == 1.0 and isinstance(vae.get_config()["beta"], float)
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1, got True"):
        kvae.build_encoder(latent_dim=True)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got False"):
        kvae.VAE(encoder, kvae.build_decoder(2, hidden=(8,)), beta=False)


# 6. compile(loss=...), sample weights ------------------------------------------------


@both
@pytest.mark.parametrize(
    "kwargs", [{"loss": "binary_crossentropy"}, {"metrics": ["mae"]}], ids=["loss", "metrics"]
)
def test_compile_refuses_a_loss_or_metrics(model, kwargs):
    vae = getattr(kvae, model)(*networks(model, hidden=(8,)))
    with pytest.raises(ValueError, match=f"^{model} computes its own loss and metrics"):
        vae.compile(optimizer="adam", **kwargs)


@both
def test_sample_weights_are_refused_not_ignored(model, train_pair):
    vae = make_vae(model)
    given = args(vae, train_pair)
    with pytest.raises(ValueError, match="take no sample_weight"):
        vae.fit(*given, sample_weight=np.ones(DIGITS), verbose=0)
    with pytest.raises(ValueError, match="take no class_weight"):
        vae.fit(*given, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="the first batch of x carries sample weights"):
        vae.fit(WeightedBatches(data(vae, train_pair)), verbose=0)
    with pytest.raises(ValueError, match="take no sample_weight"):
        vae.evaluate(*given, sample_weight=np.ones(DIGITS), verbose=0)


# 7. every data path is checked before training -----------------------------------------


def rows(x, start, stop):
    """Rows ``start:stop`` of images, or of each part of ``(images, labels)``."""
    return tuple(part[start:stop] for part in x) if isinstance(x, tuple) else x[start:stop]


class Batches(keras.utils.PyDataset):
    def __init__(self, x, **kwargs):
        super().__init__(**kwargs)
        self.x = x

    def __len__(self):
        return len(self.x[0] if isinstance(self.x, tuple) else self.x) // BATCH

    def __getitem__(self, index):
        return rows(self.x, index * BATCH, (index + 1) * BATCH)


class WeightedBatches(Batches):
    def __getitem__(self, index):
        batch = super().__getitem__(index)
        x, y = batch if isinstance(batch, tuple) else (batch, batch)
        return x, y, np.ones(len(x), "float32")


def generator(x):
    for start in range(0, len(x[0] if isinstance(x, tuple) else x), BATCH):
        batch = rows(x, start, start + BATCH)
        yield batch if isinstance(batch, tuple) else (batch,)  # Keras wants tuples


def tf_dataset(x):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(x).batch(BATCH)


def data_loader(x):
    import torch

    if not isinstance(x, tuple):
        return torch.utils.data.DataLoader(torch.from_numpy(x), batch_size=BATCH)
    tensors = torch.utils.data.TensorDataset(*(torch.from_numpy(part) for part in x))
    return torch.utils.data.DataLoader(tensors, batch_size=BATCH)  # batches [x, y]


SOURCES = {"PyDataset": Batches, "generator": generator}
if BACKEND in ("tensorflow", "jax"):
    SOURCES["tf.data"] = tf_dataset
if BACKEND == "torch":
    SOURCES["DataLoader"] = data_loader


def as_bytes(x):
    return np.rint(x * 255).astype(np.uint8)


@both
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_streams_train_with_validation_and_lose_no_batch(model, train_pair, held_out_pair, source):
    make = SOURCES[source]
    vae = make_vae(model, steps_per_execution=1)
    count = CountBatches()
    digits, held_out = data(vae, train_pair), data(vae, held_out_pair)
    history = vae.fit(
        make(digits), validation_data=make(held_out), epochs=1, callbacks=[count], verbose=0
    ).history
    assert count.batches == DIGITS // BATCH  # a generator keeps the batch that was checked
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    assert_identity(history, [1.0], prefix="val_")
    logs = vae.evaluate(make(held_out), verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])


@both
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_streams_of_bytes_are_refused_before_training(model, train_pair, held_out_pair, source):
    make = SOURCES[source]
    vae = make_vae(model, steps_per_execution=1)
    count = CountBatches()
    count.batches = 0
    digits = data(vae, train_pair)
    digit_bytes = data(vae, (as_bytes(train_pair[0]), train_pair[1]))
    held_out_bytes = data(vae, (as_bytes(held_out_pair[0]), held_out_pair[1]))
    message = r"the first batch of {}: expected float images in \[0, 1\], got dtype uint8"
    with pytest.raises(ValueError, match=message.format("x")):
        vae.fit(make(digit_bytes), epochs=1, callbacks=[count], verbose=0)
    with pytest.raises(ValueError, match=message.format("validation_data")):
        vae.fit(make(digits), validation_data=make(held_out_bytes), callbacks=[count], verbose=0)
    assert count.batches == 0  # refused before any step
    with pytest.raises(ValueError, match=message.format("x")):
        vae.evaluate(make(held_out_bytes), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data: expected float images.*uint8"):
        vae.fit(*args(vae, train_pair), validation_data=held_out_bytes, verbose=0)
    assert count.batches == 0


def test_a_gaussian_vae_refuses_bytes_too(held_out):
    vae = make_vae(likelihood="gaussian")
    with pytest.raises(ValueError, match=r"got dtype uint8"):
        vae.evaluate(Batches(as_bytes(held_out)), verbose=0)


def poison(vae):
    kernel = vae.decoder.layers[-2].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))


@both
def test_nan_stop_names_the_first_batch_and_the_term(model, train_pair):
    vae = make_vae(model)  # default grouping: 16 steps per call (1 on PyTorch)
    poison(vae)
    with pytest.raises(FloatingPointError, match=r"not finite at batch 0: .*reconstruction_loss"):
        vae.fit(*args(vae, train_pair), epochs=2, batch_size=64, verbose=0)  # 4 batches an epoch


MARK = 0.5  # a corner pixel value no MNIST digit has: the marked batch's loss is infinite


class BlowsUpOnMarkedImages(kvae.VAE):
    """A VAE whose reconstruction term is infinite for images carrying MARK in a corner."""

    def compute_terms(self, x, training=False):
        _, terms = super().compute_terms(x, training=training)
        marked = keras.ops.equal(x[:, 0, 0, 0], MARK)  # (B,)
        reconstruction = keras.ops.where(marked, np.inf, terms["reconstruction_loss"])
        per_example = reconstruction + self.beta_variable * terms["kl_loss"]
        terms = {**terms, "reconstruction_loss": reconstruction, "loss": per_example}
        return keras.ops.mean(per_example), terms


@pytest.mark.parametrize("steps_per_execution", [None] if BACKEND == "torch" else [None, 4])
def test_nan_stop_names_the_true_batch_inside_a_fused_call(digits, steps_per_execution):
    x = np.array(digits[:256])
    assert not np.any(x[:, 0, 0, 0] == MARK)
    x[128:192, 0, 0, 0] = MARK  # batch 2 of 4; the calls fuse batches 0..3 (but on PyTorch)
    keras.utils.set_random_seed(0)
    vae = BlowsUpOnMarkedImages(
        kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
    )
    grouping = {} if steps_per_execution is None else {"steps_per_execution": steps_per_execution}
    vae.compile(optimizer="adam", **grouping)
    with pytest.raises(FloatingPointError, match=r"not finite at batch 2: .*reconstruction_loss"):
        vae.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)


@both
def test_nan_stop_blames_a_huge_beta(model, train_pair):
    vae = make_vae(model, beta=1e4, optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(FloatingPointError, match="beta=10000 multiplies the KL term's gradient"):
        vae.fit(*args(vae, train_pair), epochs=3, batch_size=BATCH, verbose=0)


# 8. the AE changes nothing it is given -------------------------------------------------


def test_ae_leaves_the_encoder_alone_for_a_later_vae(digits):
    keras.utils.set_random_seed(0)
    encoder, decoder = kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
    ae = kvae.AE(encoder, decoder)
    ae.compile(optimizer="adam")
    ae.fit(digits, epochs=1, batch_size=BATCH, verbose=0)
    assert all(layer.trainable for layer in encoder.layers)
    assert len(ae.trainable_variables) == 8  # z_log_var's kernel and bias get no gradient
    vae = kvae.VAE(encoder, decoder, seed=0)
    vae.compile(optimizer="adam")
    before = [to_numpy(w)[0] for w in vae.trainable_weights]
    vae.fit(digits, epochs=1, batch_size=BATCH, verbose=0)
    changed = [
        not np.array_equal(b, to_numpy(w)[0])
        for b, w in zip(before, vae.trainable_weights, strict=True)
    ]
    assert len(changed) == 10 and all(changed)


# 13. a short last batch: padded and masked, not compiled again -------------------------

SHORT = 101  # three batches of 32 and a last batch of 5, padded to 32: rows 0-1 appear 7 times
# "auto" is Keras's default (on a CPU: no XLA under TensorFlow, jax.jit under JAX); True asks for
# XLA under TensorFlow too. PyTorch's jit_compile=True is torch.compile, not kvae's concern here.
JIT = ["auto"] if BACKEND == "torch" else ["auto", True]


def make_ae(learning_rate, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    ae = CountingAE(kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,)))
    ae.compile(optimizer=keras.optimizers.SGD(learning_rate), jit_compile=jit_compile)
    return ae


class CountingAE(kvae.AE):
    """An AE that counts how often its training objective is traced (on PyTorch: run)."""

    def compute_terms(self, x, training=False):
        self.traced = getattr(self, "traced", 0) + int(training)
        return super().compute_terms(x, training=training)


@pytest.mark.parametrize("jit_compile", JIT)
def test_a_short_last_batch_counts_once_in_the_loss_and_metrics(digits, jit_compile):
    x = digits[:SHORT]
    ae = make_ae(0.0, jit_compile)  # weights stay put: the epoch's mean is over fixed values
    logged = ae.fit(x, epochs=1, batch_size=32, shuffle=False, verbose=0).history["loss"][0]
    _, terms = ae.compute_terms(x)
    np.testing.assert_allclose(logged, to_numpy(terms["loss"])[0].mean(), rtol=1e-5)


@pytest.mark.parametrize("jit_compile", JIT)
def test_a_padded_step_equals_the_step_on_the_short_batch_alone(digits, jit_compile):
    x = digits[:SHORT]
    padded, alone = make_ae(0.05, jit_compile), make_ae(0.05, jit_compile)
    padded.fit(x, epochs=1, batch_size=32, shuffle=False, verbose=0)  # the 5 padded to 32
    alone.fit(x[:96], epochs=1, batch_size=32, shuffle=False, verbose=0)
    alone.fit(x[96:], epochs=1, batch_size=5, verbose=0)  # a fit of its own: nothing to pad
    for a, b in zip(padded.trainable_weights, alone.trainable_weights, strict=True):
        np.testing.assert_allclose(*to_numpy(a, b), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="TensorFlow's XLA step pads; JAX compiles a short batch once more (padding measured "
    "slower there, benchmarks/README.md) and PyTorch compiles nothing",
)
def test_an_xla_step_pads_a_short_last_batch_to_the_fit_s_batch_size(digits):
    ae = make_ae(1e-3, jit_compile=True)
    ae.fit(digits[:SHORT], epochs=2, batch_size=32, verbose=0)
    assert ae.traced == 1  # traced once (TensorFlow traces dynamic shapes once)
    x, mask = to_numpy(*ae.padded(digits[:5]))
    assert x.shape == (32, 28, 28, 1) and mask.sum() == 5
    np.testing.assert_array_equal(x[5:7], digits[:2])  # the padding repeats the batch's rows
    ae.fit(digits[:SHORT], epochs=1, batch_size=8, verbose=0)  # a new fit pads to its own size
    assert to_numpy(ae.padded(digits[:5])[0])[0].shape == (8, 28, 28, 1)


# 12. sampling images ------------------------------------------------------------------


class FixedLatents:
    """A sampler: every code at (1, -1); records how it was called."""

    def sample_latents(self, n, seed=None):
        self.called = (n, seed)
        return np.tile(np.array([[1.0, -1.0]], "float32"), (n, 1))


def test_sample_draws_images_reproducibly(digits):
    vae = make_vae()
    vae.fit(digits, epochs=1, batch_size=BATCH, verbose=0)
    images = vae.sample(8, seed=3)
    assert images.shape == (8, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, vae.sample(8, seed=3))
    assert not np.allclose(images, vae.sample(8, seed=4))
    z = np.random.default_rng(3).standard_normal((8, 2)).astype("float32")
    np.testing.assert_allclose(images, to_numpy(vae.decode(z))[0], atol=1e-6)
    sampler = FixedLatents()
    fixed = vae.sample(5, sampler=sampler, seed=7)
    assert sampler.called == (5, 7)
    np.testing.assert_allclose(fixed, to_numpy(vae.decode(sampler.sample_latents(5)))[0], 1e-6)
    binary = vae.sample(64, seed=0, binary=True)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    np.testing.assert_array_equal(binary, vae.sample(64, seed=0, binary=True))


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_sample_refuses_bad_counts(n):
    vae = kvae.VAE(kvae.build_encoder(2, hidden=(8,)), kvae.build_decoder(2, hidden=(8,)))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        vae.sample(n)


def test_sample_refuses_a_sampler_of_the_wrong_shape():
    vae = kvae.VAE(kvae.build_encoder(3, hidden=(8,)), kvae.build_decoder(3, hidden=(8,)))
    with pytest.raises(ValueError, match=r"return shape \(5, 3\), got \(5, 2\)"):
        vae.sample(5, sampler=FixedLatents())


# Keras's own callbacks ------------------------------------------------------------------


@both
def test_early_stopping_and_checkpoint_with_validation_split(tmp_path, model, train_pair):
    vae = make_vae(model)
    path = tmp_path / "best.keras"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=0),
        keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True),
    ]
    history = vae.fit(
        *args(vae, train_pair),
        epochs=2,
        batch_size=BATCH,
        validation_split=0.25,
        callbacks=callbacks,
        verbose=0,
    ).history
    assert len(history["val_loss"]) >= 1 and np.all(np.isfinite(history["val_loss"]))
    best = keras.saving.load_model(path)
    assert type(best) is type(vae)
    logs = best.evaluate(*args(best, train_pair, 64), verbose=0, return_dict=True)
    assert_identity(logs, 1.0)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@both
def test_backup_and_restore_resumes_after_an_interruption(tmp_path, model, train_pair):
    vae = make_vae(model)
    given = args(vae, train_pair)
    backup = keras.callbacks.BackupAndRestore(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        vae.fit(*given, epochs=2, batch_size=BATCH, callbacks=[backup, Interrupt()], verbose=0)
    resumed = make_vae(model, seed=1)  # other weights: the backup must replace them
    history = resumed.fit(*given, epochs=2, batch_size=BATCH, callbacks=[backup], verbose=0)
    assert len(history.history["loss"]) == 1  # only epoch 1 was left
    assert np.isfinite(history.history["loss"][0])


def test_an_unsupported_backend_is_one_clear_line():
    """``import keras`` still works after ``import kvae``; using kvae says why it cannot."""
    code = "import kvae, keras\nprint(keras.backend.backend())\nkvae.VAE"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "KERAS_BACKEND": "numpy"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stdout.strip() == "numpy", result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "RuntimeError: kvae runs on tensorflow, jax or torch; Keras is on 'numpy'"
    )


# Keras's conventions, round two: what a Keras user tries in their first hour ------------
# Where plain Keras behaves the same way, the test runs a plain keras.Model beside kvae.


def plain_model(trainable=True, learning_rate=0.0, **dense_kwargs):
    """A plain Keras regression model, compiled, for side-by-side comparisons."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, **dense_kwargs)(inputs))
    model.trainable = trainable
    optimizer = keras.optimizers.SGD(learning_rate)
    model.compile(optimizer=optimizer, loss="mse", steps_per_execution=1)
    return model


PLAIN_X, PLAIN_Y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")


def regularised_encoder(l2=0.0, activity=0.0):
    """An MLP encoder: Dense kernels with L2(l2); z_mean adds activity * mean(z^2)."""
    keras.utils.set_random_seed(0)
    penalty = {"kernel_regularizer": keras.regularizers.L2(l2)} if l2 else {}
    images = keras.Input((28, 28, 1))
    h = dense(64, activation="relu", **penalty)(keras.layers.Flatten()(images))
    z_mean = dense(2, name="z_mean", **penalty)(h)
    if activity:
        z_mean = ActivityPenalty(activity)(z_mean)
    return keras.Model(images, [z_mean, dense(2, name="z_log_var", **penalty)(h)])


class ActivityPenalty(keras.layers.Layer):
    """Identity that adds ``weight * mean(z^2)`` with ``add_loss``."""

    def __init__(self, weight, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, z):
        self.add_loss(self.weight * keras.ops.mean(z**2))
        return z


@pytest.mark.parametrize("kind", ["kernel_regularizer", "add_loss"])
def test_regularisation_losses_are_in_the_trained_loss(digits, kind):
    x = digits[:64]
    l2, activity = (10.0, 0.0) if kind == "kernel_regularizer" else (0.0, 1e3)
    encoder = regularised_encoder(l2=l2, activity=activity)
    vae = kvae.VAE(encoder, kvae.build_decoder(2, hidden=(64,)), seed=0)
    vae.compile(optimizer=keras.optimizers.SGD(0.0), steps_per_execution=1)  # weights stay put
    logs = vae.fit(x, batch_size=64, epochs=1, verbose=0).history
    kernels = [to_numpy(w)[0] for w in encoder.trainable_weights if w.path.endswith("kernel")]
    z_mean = to_numpy(vae.encode(x)[0])[0]
    expected = l2 * sum(np.sum(k**2) for k in kernels) + activity * np.mean(z_mean**2)
    penalty = logs["loss"][0] - logs["reconstruction_loss"][0] - logs["kl_loss"][0]
    np.testing.assert_allclose(penalty, expected, rtol=1e-3)
    # Plain Keras's logged loss includes its regularisation losses in the same way.
    plain = plain_model(kernel_regularizer=keras.regularizers.L2(10.0))
    plain_loss = plain.fit(PLAIN_X, PLAIN_Y, epochs=1, verbose=0).history["loss"][0]
    kernel, bias = (to_numpy(w)[0] for w in plain.weights)
    mse = np.mean((PLAIN_X @ kernel + bias) ** 2)
    np.testing.assert_allclose(plain_loss, mse + 10.0 * np.sum(kernel**2), rtol=1e-4)


def test_a_weight_penalty_shrinks_the_weights_it_is_on(digits):
    norms = []
    for l2 in (0.0, 10.0):
        encoder = regularised_encoder(l2=l2)
        vae = kvae.VAE(encoder, kvae.build_decoder(2, hidden=(64,)), seed=0)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        vae.fit(digits, epochs=2, batch_size=BATCH, verbose=0)
        norms.append(np.linalg.norm(to_numpy(encoder.layers[2].kernel)[0]))
    assert norms[1] < 0.5 * norms[0], norms


TARGET, STRENGTH = 5.0, 100.0  # a subclass's own penalty pulls a bias towards TARGET


class PenalisedVAE(kvae.VAE):
    """A VAE whose compute_terms adds its own term to the scalar loss only."""

    def compute_terms(self, x, training=False):
        loss, terms = super().compute_terms(x, training=training)
        bias = self.encoder.get_layer("z_mean").bias[0]
        return loss + STRENGTH * (bias - TARGET) ** 2, terms


@pytest.mark.parametrize("jit_compile", JIT)
def test_a_subclass_s_own_loss_is_trained_with_and_without_xla(digits, jit_compile):
    """One SGD step: the penalty's gradient, 2 * STRENGTH * (0 - TARGET), moves the bias."""
    biases = []
    for model in (PenalisedVAE, kvae.VAE):  # the same weights and noise; only the penalty differs
        keras.utils.set_random_seed(0)
        encoder, decoder = kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
        vae = model(encoder, decoder, seed=0)
        vae.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=jit_compile)
        assert to_numpy(encoder.get_layer("z_mean").bias)[0][0] == 0.0
        vae.fit(digits[:BATCH], epochs=1, batch_size=BATCH, verbose=0)
        biases.append(to_numpy(encoder.get_layer("z_mean").bias)[0][0])
    np.testing.assert_allclose(biases[0] - biases[1], 1e-3 * 2 * STRENGTH * TARGET, rtol=1e-3)


@keras.saving.register_keras_serializable(package="kvae_tests")
class LearnedScaleVAE(kvae.VAE):
    """A Gaussian likelihood whose scale is a weight of the model (its own state)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, likelihood="gaussian", **kwargs)
        self.log_scale = self.add_weight(shape=(), initializer="zeros", name="log_scale")

    def reconstruction(self, x, z, training):
        mean = keras.ops.sigmoid(self.decoder(z, training=training))
        per_pixel = 0.5 * ((x - mean) / keras.ops.exp(self.log_scale)) ** 2 + self.log_scale
        return keras.ops.sum(keras.ops.reshape(per_pixel, (keras.ops.shape(x)[0], -1)), axis=-1)

    def get_config(self):
        config = super().get_config()
        del config["likelihood"]
        return config


def test_a_subclass_can_own_a_trained_and_saved_variable(tmp_path, digits):
    keras.utils.set_random_seed(0)
    encoder, decoder = kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
    vae = LearnedScaleVAE(encoder, decoder, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert any(w.path.endswith("log_scale") for w in vae.trainable_weights)
    vae.fit(digits, epochs=2, batch_size=BATCH, verbose=0)
    scale = float(to_numpy(vae.log_scale)[0])
    assert scale < -0.05  # the pixels' error is far below 1: the learned scale shrinks
    vae.save(tmp_path / "scale.keras")
    loaded = keras.saving.load_model(tmp_path / "scale.keras")
    assert float(to_numpy(loaded.log_scale)[0]) == pytest.approx(scale)


class Counter(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.calls = 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1


@pytest.mark.parametrize("form", ["one callback", "CallbackList"])
def test_callbacks_may_be_one_callback_or_a_callback_list(digits, form):
    def wrap(callback, model):
        if form == "one callback":
            return callback
        return keras.callbacks.CallbackList([callback], add_history=True, model=model)

    vae, counter = make_vae(steps_per_execution=1), Counter()
    vae.fit(digits, epochs=1, batch_size=BATCH, callbacks=wrap(counter, vae), verbose=0)
    assert counter.calls == DIGITS // BATCH
    plain, plain_counter = plain_model(), Counter()  # plain Keras takes both forms too
    plain.fit(PLAIN_X, PLAIN_Y, batch_size=4, callbacks=wrap(plain_counter, plain), verbose=0)
    assert plain_counter.calls == 2
    poison(vae)  # kvae's NaN stop still runs beside the user's callbacks
    with pytest.raises(FloatingPointError, match="not finite at batch 0"):
        vae.fit(digits, epochs=1, batch_size=BATCH, callbacks=wrap(Counter(), vae), verbose=0)


@both
def test_terminate_on_nan_stops_training_and_fit_returns_its_history(model, train_pair):
    vae = make_vae(model, steps_per_execution=1)
    poison(vae)
    history = vae.fit(
        *args(vae, train_pair),
        epochs=3,
        batch_size=BATCH,
        callbacks=[keras.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    assert isinstance(history, keras.callbacks.History) and vae.stop_training
    assert len(history.history["loss"]) == 1 and not np.isfinite(history.history["loss"][0])
    plain = plain_model()  # plain Keras: the same contract
    plain.layers[-1].kernel.assign(np.full((4, 1), np.nan, "float32"))
    plain_history = plain.fit(
        PLAIN_X, PLAIN_Y, epochs=3, callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0
    )
    assert len(plain_history.history["loss"]) == 1


class BatchLogKeys(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.keys = sorted(logs)


@both
def test_the_nan_tracker_never_shows_among_the_metrics(model, train_pair, held_out_pair):
    vae = make_vae(model)
    names = ["loss", "reconstruction_loss", "kl_loss"]
    keys = BatchLogKeys()
    held_out = data(vae, held_out_pair)
    history = vae.fit(
        *args(vae, train_pair),
        batch_size=BATCH,
        validation_data=held_out,
        callbacks=[keys],
        verbose=0,
    ).history
    assert keys.keys == sorted(names)
    assert sorted(history) == sorted(names + [f"val_{n}" for n in names])
    assert vae.metrics_names == names
    assert list(vae.get_metrics_result()) == names
    values = vae.evaluate(*args(vae, held_out_pair), verbose=0)  # metrics_names' order
    result = vae.get_metrics_result()  # the same evaluation, by name
    np.testing.assert_allclose(values, [float(result[n]) for n in vae.metrics_names], rtol=1e-6)


@both
def test_steps_per_epoch_runs_exactly_that_many_steps(model, mnist_train):
    vae = make_vae(model)  # kvae's default grouping (16 batches per call, 1 on PyTorch)
    given = args(vae, mnist_train, 1024)  # 8 batches of 128
    vae.fit(*given, epochs=2, batch_size=128, steps_per_epoch=3, verbose=0)
    assert int(to_numpy(vae.optimizer.iterations)[0]) == 6
    vae.fit(*given, epochs=1, batch_size=32, steps_per_epoch=20, verbose=0)  # 2 calls of 10
    assert int(to_numpy(vae.optimizer.iterations)[0]) == 26
    if BACKEND != "torch":  # plain Keras at 16 batches per call runs whole calls: 8 per epoch
        plain = plain_model()
        plain.compile(optimizer="sgd", loss="mse", steps_per_execution=16)
        data = np.ones((64, 4)), np.zeros((64, 1))
        plain.fit(*data, batch_size=8, epochs=2, steps_per_epoch=3, verbose=0)
        assert int(to_numpy(plain.optimizer.iterations)[0]) == 16


@pytest.mark.skipif(BACKEND == "torch", reason="tf.data runs under TensorFlow and JAX")
def test_steps_per_epoch_on_a_repeated_dataset(digits):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(digits).batch(BATCH).repeat()
    vae = make_vae()
    vae.fit(data, epochs=2, steps_per_epoch=5, verbose=0)
    assert int(to_numpy(vae.optimizer.iterations)[0]) == 10


def test_the_progress_bar_counts_the_steps_an_epoch_has(digits, capsys):
    vae = make_vae()
    vae.fit(digits[:128], epochs=1, batch_size=BATCH, verbose=1)  # 4 batches
    out = capsys.readouterr().out
    assert "4/4" in out and "16/4" not in out, out[-500:]


@both
def test_fit_before_compile_says_compile_as_keras_does(model, train_pair):
    vae = getattr(kvae, model)(*networks(model, hidden=(8,)))
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before") as ours:
        vae.fit(*args(vae, train_pair, 32), verbose=0)
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before") as theirs:
        plain.fit(PLAIN_X, PLAIN_Y, verbose=0)
    assert str(ours.value).startswith(str(theirs.value).rstrip("."))


@both
def test_a_frozen_model_trains_nothing_and_says_so(model, train_pair):
    vae = make_vae(model, steps_per_execution=1)
    vae.trainable = False
    vae.compile(optimizer="adam", steps_per_execution=1)  # recompile after freezing, as Keras asks
    networks = vae.encoder.weights + vae.decoder.weights
    before = [to_numpy(w)[0] for w in networks]
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        history = vae.fit(*args(vae, train_pair), epochs=1, batch_size=BATCH, verbose=0).history
    assert np.isfinite(history["loss"][0])
    for b, w in zip(before, networks, strict=True):
        np.testing.assert_array_equal(b, to_numpy(w)[0])
    plain = plain_model(trainable=False, learning_rate=0.1)  # plain Keras: runs, moves nothing
    kernel = to_numpy(plain.layers[-1].kernel)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns as kvae does, but under JAX
        plain.fit(PLAIN_X, PLAIN_Y, verbose=0)
    np.testing.assert_array_equal(kernel, to_numpy(plain.layers[-1].kernel)[0])


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras 3.15 cannot export a plain functional model to a SavedModel under PyTorch "
    "either (torch.export refuses its input structure)",
)
def test_the_model_and_its_encoder_export_without_a_call_first(tmp_path, held_out):
    import tensorflow as tf

    vae = make_vae()
    x = held_out[:8]
    vae.export(str(tmp_path / "vae"), verbose=False)
    served_vae = tf.saved_model.load(str(tmp_path / "vae"))  # kept: its variables live in it
    served = served_vae.serve(tf.constant(x))
    np.testing.assert_allclose(
        np.asarray(served), to_numpy(vae.predict(x, verbose=0))[0], atol=1e-5
    )
    vae.encoder.export(str(tmp_path / "encoder"), verbose=False)
    served_encoder = tf.saved_model.load(str(tmp_path / "encoder"))
    z_mean, _ = served_encoder.serve(tf.constant(x))
    np.testing.assert_allclose(np.asarray(z_mean), to_numpy(vae.encode(x)[0])[0], atol=1e-5)


class BetaAtEachCall(keras.callbacks.Callback):
    """Records (optimizer steps so far, beta) at the start of each call, after the schedule."""

    def on_train_begin(self, logs=None):
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        steps = int(to_numpy(self.model.optimizer.iterations)[0])
        self.seen.append((steps, self.model.beta))


@both
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_kl_schedules_follow_the_optimizer_s_steps(model, mnist_train, grouping):
    vae = make_vae(model, steps_per_execution=grouping)
    record = BetaAtEachCall()
    warmup = KLWarmup(steps=1000)
    # 300 digits in batches of 32: 10 steps per epoch; with 4 per call the last call runs 2.
    given = args(vae, mnist_train, 300)
    vae.fit(*given, epochs=3, batch_size=BATCH, callbacks=[warmup, record], verbose=0)
    assert int(to_numpy(vae.optimizer.iterations)[0]) == 30
    for steps, beta in record.seen:
        assert beta == pytest.approx(steps / 1000), record.seen


def test_dense_networks_take_volumes_and_the_advice_keeps_every_axis():
    volume = (16, 16, 16, 1)
    encoder = kvae.build_encoder(2, hidden=(8,), input_shape=volume)
    vae = kvae.VAE(encoder, kvae.build_decoder(2, hidden=(8,), output_shape=volume))
    assert vae.image_shape == volume
    assert vae.sample(2, seed=0).shape == (2, *volume)
    flat = decoder_with(dense(16 * 16 * 16))
    with pytest.raises(ValueError, match=r"Reshape\(\(16, 16, 16, 1\)\)"):
        kvae.VAE(kvae.build_encoder(2, hidden=(8,), input_shape=volume), flat)


def test_compile_with_empty_metrics_asks_for_nothing_and_is_accepted(digits):
    vae = kvae.VAE(kvae.build_encoder(2, hidden=(8,)), kvae.build_decoder(2, hidden=(8,)))
    vae.compile(optimizer="adam", metrics=[], weighted_metrics=[])  # as plain Keras accepts
    assert vae.metrics_names == ["loss", "reconstruction_loss", "kl_loss"]
    with pytest.raises(ValueError, match="compile\\(\\) takes no metrics"):
        vae.compile(optimizer="adam", metrics=["mae"])


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


@both
def test_a_float64_model_trains(model, train_pair, float64):
    vae = make_vae(model)
    given = args(vae, (train_pair[0].astype("float64"), train_pair[1]))
    history = vae.fit(*given, epochs=1, batch_size=BATCH, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert_identity(history, [1.0])


@both
def test_train_on_batch_checks_its_images_as_fit_does(model, train_pair):
    vae = make_vae(model)
    before = [to_numpy(w)[0] for w in vae.trainable_weights]
    scaled = args(vae, (train_pair[0] * 255.0, train_pair[1]), 32)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*divide uint8 images by 255"):
        vae.train_on_batch(*scaled)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        vae.test_on_batch(*scaled)
    for b, w in zip(before, vae.trainable_weights, strict=True):
        np.testing.assert_array_equal(b, to_numpy(w)[0])
    logs = vae.train_on_batch(*args(vae, train_pair, 32), return_dict=True)
    assert sorted(logs) == ["kl_loss", "loss", "reconstruction_loss"]
    assert_identity(logs, 1.0)

"""kvae.ConditionalVAE: what is its own beyond the VAE's contract (tests/test_keras_user.py
runs that contract for both models): labels, sampling and coding for chosen digits, the
label's effect, saving across backends, and its networks."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kvae
from kvae import judge

NEXT_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[BACKEND]


def make_cvae(latent_dim=2, hidden=(64,), seed=0, kind="mlp", **kwargs):
    keras.utils.set_random_seed(seed)
    networks = {"latent_dim": latent_dim, "hidden": hidden, "kind": kind, "num_classes": 10}
    cvae = kvae.ConditionalVAE(
        kvae.build_encoder(**networks), kvae.build_decoder(**networks), seed=seed, **kwargs
    )
    cvae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return cvae


@pytest.fixture(scope="module")
def trained(mnist_train):
    """A 2-D conditional VAE, 750 steps (about 10 s): it draws the digit asked for (the judge
    reads about 90% as asked; 100 steps, still blobs, only 11%)."""
    cvae = make_cvae(hidden=(256,))
    cvae.fit(*mnist_train, epochs=3, batch_size=32, verbose=0)
    return cvae


# labels ------------------------------------------------------------------------------------

BAD_LABELS = {
    "floats": (lambda y: y.astype("float32"), r"integer labels, got dtype float32"),
    "bools": (lambda y: y > 4, r"integer labels, got dtype bool"),
    "out of range": (
        lambda y: y + 1,
        r"classes 0\.\.9 \(num_classes=10\), got values in \[1, 10\]",
    ),
    "negative": (lambda y: y - 1, r"got values in \[-1, 8\]"),
    "one too few": (lambda y: y[:-1], r"one label per image: 64 images, got 63 labels"),
    "one-hot": (lambda y: np.eye(10, dtype="int64")[y], r"shape \(N,\), got \(64, 10\): one-hot"),
    "a column": (lambda y: y[:, None], r"shape \(N,\), got \(64, 1\)"),
}


class CountBatches(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.batches = getattr(self, "batches", 0) + 1


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_labels_are_refused_before_any_step(mnist_train, case):
    spoil, message = BAD_LABELS[case]
    x, y = mnist_train[0][:64], mnist_train[1][:64]
    assert y.min() == 0 and y.max() == 9  # the ranges in the messages are these labels'
    cvae, count = make_cvae(), CountBatches()
    before = [to_numpy(w)[0] for w in cvae.trainable_weights]
    bad = spoil(y)
    for given in ((x, bad), ((x, bad),)):  # fit(x, y) and fit((x, y))
        with pytest.raises(ValueError, match=message):
            cvae.fit(*given, epochs=1, callbacks=[count], verbose=0)
    with pytest.raises(ValueError, match=message):
        cvae.fit(x, y, validation_data=(x, bad), callbacks=[count], verbose=0)
    with pytest.raises(ValueError, match=message):
        cvae.evaluate(x, bad, verbose=0)
    with pytest.raises(ValueError, match=message):
        cvae.predict((x, bad), verbose=0)
    with pytest.raises(ValueError, match=message):
        cvae.train_on_batch(x, bad)
    assert getattr(count, "batches", 0) == 0
    for b, w in zip(before, cvae.trainable_weights, strict=True):
        np.testing.assert_array_equal(b, to_numpy(w)[0])


def test_images_without_labels_are_refused(mnist_train):
    cvae = make_cvae()
    x = mnist_train[0][:64]
    with pytest.raises(ValueError, match=r"x holds images without labels.*fit\(x, y\)"):
        cvae.fit(x, verbose=0)
    with pytest.raises(ValueError, match="validation_data holds images without labels"):
        cvae.fit(x, mnist_train[1][:64], validation_data=(x,), verbose=0)


@pytest.mark.parametrize(
    "labels, message",
    [
        (10, r"got values in \[10, 10\]"),
        (2.0, "got dtype float64"),
        (True, "got dtype bool"),
        ([1, 2], "one label per image: 3 images, got 2 labels"),
    ],
)
def test_encode_decode_and_sample_check_their_labels(labels, message):
    cvae = make_cvae()
    x, z = np.zeros((3, 28, 28, 1), "float32"), np.zeros((3, 2), "float32")
    for call in (lambda: cvae.encode(x, labels), lambda: cvae.decode(z, labels)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message):
        cvae.sample(3, labels)


def test_num_classes_is_checked():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got 1"):
        kvae.ConditionalVAE(kvae.build_encoder(2), kvae.build_decoder(2), num_classes=1)
    with pytest.raises(ValueError, match="num_classes must be None or an integer >= 2"):
        kvae.build_encoder(2, num_classes=True)


# shapes and broadcasting ---------------------------------------------------------------------


def test_encode_decode_and_sample_shapes_and_one_label_for_all(trained, mnist_test):
    x = mnist_test[0][:5]
    z_mean, z_log_var = to_numpy(*trained.encode(x, 3))
    assert z_mean.shape == z_log_var.shape == (5, 2)
    for a, b in zip(to_numpy(*trained.encode(x, np.full(5, 3))), (z_mean, z_log_var), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    z = np.random.default_rng(0).standard_normal((5, 2)).astype("float32")
    images = to_numpy(trained.decode(z, 7))[0]
    assert images.shape == (5, 28, 28, 1) and 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_allclose(images, to_numpy(trained.decode(z, [7] * 5))[0], atol=1e-6)
    drawn = trained.sample(5, 7, seed=0)  # z ~ N(0, I) from default_rng(0), as VAE.sample
    assert drawn.shape == (5, 28, 28, 1) and drawn.dtype == np.float32
    np.testing.assert_allclose(drawn, images, atol=1e-6)
    np.testing.assert_array_equal(drawn, trained.sample(5, np.int64(7), seed=0))
    mixed = trained.sample(5, [0, 1, 2, 3, 4], seed=0)  # one label per image, the same codes
    np.testing.assert_allclose(mixed[2], to_numpy(trained.decode(z[2:3], 2))[0][0], atol=1e-6)
    binary = trained.sample(64, 3, seed=0, binary=True)
    assert set(np.unique(binary)) <= {0.0, 1.0}


def test_predict_reconstructs_through_the_posterior_mean(trained, mnist_test):
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    z_mean, _ = trained.encode(x, y)
    expected = to_numpy(trained.decode(z_mean, y))[0]
    np.testing.assert_allclose(to_numpy(trained.predict((x, y), verbose=0))[0], expected, atol=1e-5)


# the label is used -------------------------------------------------------------------------


def test_the_label_decides_the_digit_drawn(trained):
    """Asked for each digit from the same codes, the judge reads the digit asked for.

    With the label ignored (or one class for all) the share would be near 0.1.
    """
    asked = np.arange(500) % 10
    score = judge.asked_score(trained.sample(500, asked, seed=0), asked)
    assert score.as_asked > 0.6, score
    z = np.random.default_rng(1).standard_normal((50, 2)).astype("float32")
    ones, sevens = (to_numpy(trained.decode(z, d))[0] for d in (1, 7))
    assert np.mean(np.abs(ones - sevens)) > 0.05  # same codes, another digit


def test_the_label_reaches_the_encoder(trained, mnist_test):
    x = mnist_test[0][:64]
    codes = [to_numpy(trained.encode(x, d)[0])[0] for d in (0, 5)]
    assert np.mean(np.abs(codes[0] - codes[1])) > 0.05


# samplers ----------------------------------------------------------------------------------


class Recorder:
    """A per-class sampler that draws code (label, -label) and records its calls."""

    per_class = True

    def sample_latents(self, n, seed=None, labels=None):
        self.called = (n, seed, list(labels))
        return np.stack([labels, -labels], axis=1).astype("float32")


def test_sample_gives_a_per_class_sampler_the_labels(trained):
    sampler = Recorder()
    images = trained.sample(3, [4, 5, 6], sampler=sampler, seed=9)
    assert sampler.called == (3, 9, [4, 5, 6])
    z = np.array([[4, -4], [5, -5], [6, -6]], "float32")
    np.testing.assert_allclose(images, to_numpy(trained.decode(z, [4, 5, 6]))[0], atol=1e-6)


def test_samplers_of_a_conditional_model_need_the_labels(trained, mnist_train):
    x, y = mnist_train[0][:500], mnist_train[1][:500]
    with pytest.raises(
        ValueError, match=r"encodes each image with its label: call .*fit\(x, labels\)"
    ):
        kvae.AggregatePosteriorSampler(trained).fit(x)
    pooled = kvae.AggregatePosteriorSampler(trained).fit(x, y)
    z_mean, _ = trained.encode(x, y)
    np.testing.assert_allclose(pooled.z_mean, to_numpy(z_mean)[0], atol=1e-5)
    assert trained.sample(4, 2, sampler=pooled, seed=0).shape == (4, 28, 28, 1)


def test_a_per_class_sampler_draws_each_code_from_its_digit(trained, mnist_train):
    x, y = mnist_train[0][:1000], mnist_train[1][:1000]
    sampler = kvae.PerClassSampler(trained, seed=0).fit(x, y)
    asked = np.arange(400) % 10
    z = sampler.sample_latents(400, seed=1, labels=asked)
    assert z.shape == (400, 2) and z.dtype == np.float32
    np.testing.assert_array_equal(z, sampler.sample_latents(400, seed=1, labels=asked))
    ones = sampler.sample_latents(40, seed=1, labels=1)
    np.testing.assert_array_equal(ones, z[asked == 1])  # a class's codes ignore the others
    for digit in range(10):  # each draw lies within 5 sigmas of a posterior of its digit
        mean = sampler.samplers[digit].z_mean
        sigma = np.exp(0.5 * sampler.samplers[digit].z_log_var)
        distance = np.abs(z[asked == digit][:, None] - mean[None]) / sigma[None]
        assert np.all(np.min(np.max(distance, axis=-1), axis=1) < 5), digit
    with pytest.raises(ValueError, match="draws codes for labels"):
        sampler.sample_latents(4)
    with pytest.raises(ValueError, match=r"none of class \[3\]"):
        kvae.PerClassSampler(trained).fit(x[y != 3], y[y != 3])
    drawn = trained.sample(20, asked[:20], sampler=sampler, seed=2)
    assert drawn.shape == (20, 28, 28, 1)


# saving and backends -----------------------------------------------------------------------

ELSEWHERE = """
import sys, numpy as np, keras, kvae
cvae = keras.saving.load_model(sys.argv[1])
assert type(cvae).__name__ == "ConditionalVAE" and cvae.num_classes == 10, type(cvae)
x, y = np.load(sys.argv[2]), np.load(sys.argv[3])
encoded = [keras.ops.convert_to_numpy(t) for t in cvae.encode(x, y)]
decoded = keras.ops.convert_to_numpy(cvae.decode(encoded[0], (y + 1) % 10))
np.savez(sys.argv[4], z_mean=encoded[0], z_log_var=encoded[1], decoded=decoded)
weights = kvae.ConditionalVAE(
    kvae.build_encoder(2, hidden=(64,), num_classes=10),
    kvae.build_decoder(2, hidden=(64,), num_classes=10),
)
weights.load_weights(sys.argv[5])
loaded = keras.ops.convert_to_numpy(weights.encode(x, y)[0])
np.testing.assert_allclose(loaded, encoded[0], atol=1e-5)
history = cvae.fit(x, y, epochs=1, batch_size=16, verbose=0)
assert np.isfinite(history.history["loss"][0])
print(keras.backend.backend())
"""


def test_a_saved_model_and_its_weights_load_and_train_under_another_backend(tmp_path, mnist_train):
    cvae = make_cvae()
    x, y = mnist_train[0][:64], mnist_train[1][:64]
    cvae.fit(x, y, epochs=1, batch_size=16, verbose=0)
    cvae.save(tmp_path / "cvae.keras")
    cvae.save_weights(tmp_path / "cvae.weights.h5")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    paths = [tmp_path / name for name in ("cvae.keras", "x.npy", "y.npy", "out.npz")]
    result = subprocess.run(
        [sys.executable, "-c", ELSEWHERE, *map(str, paths), str(tmp_path / "cvae.weights.h5")],
        env={**os.environ, "KERAS_BACKEND": NEXT_BACKEND},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == NEXT_BACKEND
    there = np.load(tmp_path / "out.npz")
    z_mean, z_log_var = to_numpy(*cvae.encode(x, y))
    np.testing.assert_allclose(there["z_mean"], z_mean, atol=1e-5)
    np.testing.assert_allclose(there["z_log_var"], z_log_var, atol=1e-5)
    decoded = to_numpy(cvae.decode(z_mean.astype("float32"), (y + 1) % 10))[0]
    np.testing.assert_allclose(there["decoded"], decoded, atol=1e-5)


def test_get_config_round_trip_keeps_the_classes_and_beta():
    cvae = make_cvae(beta=3.0, free_bits=0.1)
    clone = kvae.ConditionalVAE.from_config(cvae.get_config())
    assert (clone.num_classes, clone.beta, clone.free_bits) == (10, 3.0, 0.1)


# networks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_conditional_networks_take_the_one_hot_label(kind, mnist_train):
    networks = {"latent_dim": 3, "hidden": (16,), "kind": kind, "num_classes": 10}
    encoder, decoder = kvae.build_encoder(**networks), kvae.build_decoder(**networks)
    assert [tuple(t.shape) for t in encoder.inputs] == [(None, 28, 28, 1), (None, 10)]
    assert [tuple(t.shape) for t in decoder.inputs] == [(None, 3), (None, 10)]
    cvae = make_cvae(latent_dim=3, hidden=(16,), kind=kind)
    x, y = mnist_train[0][:128], mnist_train[1][:128]
    history = cvae.fit(x, y, epochs=1, batch_size=64, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_the_unconditional_networks_are_unchanged():
    encoder = kvae.build_encoder(2, hidden=(8,))
    assert len(encoder.inputs) == 1 and tuple(encoder.inputs[0].shape) == (None, 28, 28, 1)
    assert len(kvae.build_decoder(2, hidden=(8,)).inputs) == 1


def test_networks_of_the_wrong_kind_are_named_at_construction():
    plain = kvae.build_encoder(2, hidden=(8,)), kvae.build_decoder(2, hidden=(8,))
    conditional = (
        kvae.build_encoder(2, hidden=(8,), num_classes=10),
        kvae.build_decoder(2, hidden=(8,), num_classes=10),
    )
    with pytest.raises(
        ValueError,
        match=r"encoder of a conditional model to take two inputs.*"
        r"num_classes=10",
    ):
        kvae.ConditionalVAE(*plain)
    with pytest.raises(ValueError, match=r"decoder of a conditional model.*\(batch, 10\)"):
        kvae.ConditionalVAE(conditional[0], plain[1])
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        kvae.ConditionalVAE(*conditional, num_classes=5)
    with pytest.raises(ValueError, match="encoder to take one input.*kvae.ConditionalVAE"):
        kvae.VAE(*conditional)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's XLA step pads a short batch")
def test_an_xla_step_pads_the_labels_with_their_images(mnist_train):
    x, y = mnist_train[0][:101], mnist_train[1][:101]
    cvae = make_cvae()
    cvae.compile(optimizer="adam", jit_compile=True)
    history = cvae.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    assert np.isfinite(history["loss"][0])
    (images, labels), mask = cvae.padded((x[:5], y[:5]))
    images, labels, mask = (np.asarray(t) for t in (images, labels, mask))
    assert images.shape == (32, 28, 28, 1) and labels.shape == (32,) and mask.sum() == 5
    np.testing.assert_array_equal(labels[5:10], y[:5])  # each image keeps its own label
    np.testing.assert_array_equal(images[5:10], x[:5])


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras 3.15 cannot export a plain functional model to a SavedModel under PyTorch",
)
def test_the_model_exports_images_and_labels_to_reconstructions(tmp_path, mnist_test):
    import tensorflow as tf

    cvae = make_cvae()
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    cvae.export(str(tmp_path / "cvae"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "cvae"))  # kept: its variables live in it
    reconstructed = served.serve((tf.constant(x), tf.constant(y.astype("int32"))))
    expected = to_numpy(cvae.predict((x, y), verbose=0))[0]
    np.testing.assert_allclose(np.asarray(reconstructed), expected, atol=1e-5)

"""AE and VAE on real bundled MNIST, under whichever backend this process runs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

import kvae

TRAIN_SUBSET = 2048  # enough digits for the loss to fall clearly within two epochs


def make_vae(beta=1.0, seed=0, latent_dim=2, **kwargs):
    keras.utils.set_random_seed(seed)
    encoder = kvae.build_encoder(latent_dim, hidden=(64,))
    decoder = kvae.build_decoder(latent_dim, hidden=(64,))
    vae = kvae.VAE(encoder, decoder, beta=beta, seed=seed, **kwargs)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


def test_training_lowers_the_loss_within_two_epochs(mnist_train):
    history = make_vae().fit(mnist_train[0][:TRAIN_SUBSET], epochs=2, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[1] < losses[0] - 5.0, losses  # nats per example; the first epochs drop by tens


@pytest.mark.parametrize("beta", [1.0, 0.0, 3.0])  # beta = 0: loss is the reconstruction alone
def test_loss_is_reconstruction_plus_beta_kl(mnist_train, beta):
    x = mnist_train[0][:512]
    history = make_vae(beta=beta).fit(x, epochs=1, batch_size=100, verbose=0).history
    loss, reconstruction, kl = (
        np.array(history[k]) for k in ("loss", "reconstruction_loss", "kl_loss")
    )
    assert np.all(kl > 0)  # the KL is still measured when beta = 0, just not optimised
    np.testing.assert_allclose(loss, reconstruction + beta * kl, rtol=1e-5)


def test_evaluate_reports_the_same_identity(mnist_test):
    logs = make_vae().evaluate(mnist_test[0][:300], batch_size=128, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss"}
    np.testing.assert_allclose(
        logs["loss"], logs["reconstruction_loss"] + logs["kl_loss"], rtol=1e-5
    )


def test_reconstruction_and_kl_are_per_example_sums(mnist_test):
    """Nats per example: summed over pixels and latent dimensions, averaged over the batch."""
    x = mnist_test[0][:32]
    vae = make_vae(latent_dim=4)
    _, terms = vae.compute_terms(x)
    z_mean, z_log_var = to_numpy(*vae.encode(x))
    kl_numpy = 0.5 * np.sum(z_mean**2 + np.exp(z_log_var) - 1 - z_log_var, axis=-1)
    (kl, reconstruction) = to_numpy(terms["kl_loss"], terms["reconstruction_loss"])
    np.testing.assert_allclose(kl, kl_numpy, rtol=1e-4)
    assert reconstruction.shape == (32,) and np.all(reconstruction > 100)  # ~ 784 * log 2 untrained


def test_seed_generator_advances_every_step(mnist_train):
    vae = make_vae()
    before = to_numpy(vae.sampling.seed_generator.state.value)[0]
    vae.fit(mnist_train[0][:256], epochs=1, batch_size=64, verbose=0)
    after = to_numpy(vae.sampling.seed_generator.state.value)[0]
    assert not np.array_equal(before, after)


@pytest.mark.skipif(BACKEND != "jax", reason="the stateless train_step is JAX's")
def test_jax_train_step_returns_fresh_noise_state_each_step(mnist_train):
    """A JAX train_step that dropped the non-trainable state would reuse one eps forever."""
    vae = make_vae()
    vae.optimizer.build(vae.trainable_variables)
    x = mnist_train[0][:64]
    state = (
        [v.value for v in vae.trainable_variables],
        [v.value for v in vae.non_trainable_variables],
        [v.value for v in vae.optimizer.variables],
        [v.value for v in vae.metrics_variables],
    )
    seed_index = [v.path for v in vae.non_trainable_variables].index(
        vae.sampling.seed_generator.state.path
    )
    seeds, noises = [], []
    for _ in range(3):
        seeds.append(np.asarray(state[1][seed_index]))
        mapping = list(zip(vae.non_trainable_variables, state[1], strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            zeros = np.zeros((4, 2), "float32")
            noises.append(np.asarray(vae.sampling(zeros, zeros)))
        _, state = vae.train_step(state, (x,))
    assert len({s.tobytes() for s in seeds}) == 3
    assert not np.allclose(noises[0], noises[1]) and not np.allclose(noises[1], noises[2])


def test_same_seed_gives_the_same_first_epoch_loss(mnist_train):
    x = mnist_train[0][:1024]
    runs = [make_vae(seed=5).fit(x, epochs=1, batch_size=128, verbose=0) for _ in range(2)]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    other = make_vae(seed=6).fit(x, epochs=1, batch_size=128, verbose=0)
    assert other.history["loss"] != runs[0].history["loss"]


def test_fresh_and_trained_models_save_and_reload(tmp_path, mnist_train, mnist_test):
    vae = make_vae()
    vae.save(tmp_path / "fresh.keras")  # no "model has not yet been built"
    vae.fit(mnist_train[0][:512], epochs=1, batch_size=128, verbose=0)
    vae.save(tmp_path / "trained.keras")
    restored = keras.saving.load_model(tmp_path / "trained.keras")
    assert isinstance(restored, kvae.VAE) and restored.beta == 1.0
    x = mnist_test[0][:16]
    np.testing.assert_allclose(
        *to_numpy(restored.predict(x, verbose=0), vae.predict(x, verbose=0)), atol=1e-6
    )
    for a, b in zip(restored.encode(x), vae.encode(x), strict=True):
        np.testing.assert_allclose(*to_numpy(a, b), atol=1e-6)
    restored.fit(
        mnist_train[0][:256], epochs=1, verbose=0
    )  # reloaded with its optimizer, trainable


NEXT_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}

LOAD_ELSEWHERE = """
import sys, numpy as np, keras, kvae
encoder, decoder = kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
vae = kvae.VAE(encoder, decoder)
vae.load_weights(sys.argv[1])
z_mean, z_log_var = vae.encode(np.load(sys.argv[2]))
codes = [keras.ops.convert_to_numpy(t) for t in (z_mean, z_log_var)]
np.save(sys.argv[3], np.stack(codes))
print(keras.backend.backend())
"""


def test_weights_load_under_another_backend(tmp_path, mnist_train, mnist_test):
    vae = make_vae()
    vae.fit(mnist_train[0][:512], epochs=1, batch_size=128, verbose=0)
    vae.save_weights(tmp_path / "vae.weights.h5")
    x = mnist_test[0][:32]
    np.save(tmp_path / "x.npy", x)
    other = NEXT_BACKEND[BACKEND]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_ELSEWHERE,
            str(tmp_path / "vae.weights.h5"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "z.npy"),
        ],
        env={**os.environ, "KERAS_BACKEND": other},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == other
    z_mean, z_log_var = to_numpy(*vae.encode(x))
    loaded = np.load(tmp_path / "z.npy")
    np.testing.assert_allclose(loaded[0], z_mean, atol=1e-5)
    np.testing.assert_allclose(loaded[1], z_log_var, atol=1e-5)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((8, 28, 28)), r"expected images of shape \(N, 28, 28, 1\)"),
        (np.full((8, 28, 28, 1), np.nan, "float32"), "NaN or infinite"),
        (np.full((8, 28, 28, 1), 3.0, "float32"), r"values in \[0, 1\]"),
    ],
)
def test_fit_and_evaluate_refuse_bad_images(images, message):
    vae = make_vae()
    with pytest.raises(ValueError, match=message):
        vae.fit(images, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        vae.evaluate(images, verbose=0)


@pytest.mark.parametrize("beta", [-0.5, float("nan"), float("inf"), "1"])
def test_bad_beta_is_refused(beta):
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        kvae.VAE(kvae.build_encoder(2), kvae.build_decoder(2), beta=beta)


def test_unknown_likelihood_is_refused():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        kvae.VAE(kvae.build_encoder(2), kvae.build_decoder(2), likelihood="poisson")


def test_nan_loss_stops_training_with_a_message(mnist_train):
    vae = make_vae()
    kernel = vae.decoder.layers[-2].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(FloatingPointError, match=r"loss is not finite at batche?s? \d+"):
        vae.fit(mnist_train[0][:512], epochs=3, batch_size=64, verbose=0)


def test_gaussian_likelihood_refuses_values_outside_unit_interval(mnist_train):
    """Its mean is sigmoid(logits), in (0, 1): raw bytes would only blow the loss up."""
    vae = make_vae(likelihood="gaussian")
    with pytest.raises(ValueError, match=r"gaussian likelihood needs pixel values in \[0, 1\]"):
        vae.fit(mnist_train[0][:512] * 255.0, epochs=1, batch_size=128, verbose=0)
    history = vae.fit(mnist_train[0][:512], epochs=1, batch_size=128, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_conv_vae_trains_a_step(mnist_train):
    keras.utils.set_random_seed(0)
    vae = kvae.VAE(
        kvae.build_encoder(2, kind="conv", hidden=(16,)),
        kvae.build_decoder(2, kind="conv", hidden=(16,)),
    )
    vae.compile(optimizer="adam")
    history = vae.fit(mnist_train[0][:128], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_ae_is_a_point_map_trained_on_reconstruction_only(mnist_train, mnist_test):
    keras.utils.set_random_seed(0)
    ae = kvae.AE(kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,)))
    ae.compile(optimizer=keras.optimizers.Adam(1e-3))
    frozen = [to_numpy(w)[0] for w in ae.encoder.get_layer("z_log_var").weights]
    history = ae.fit(mnist_train[0][:1024], epochs=2, batch_size=64, verbose=0).history
    assert (
        history["loss"] == history["reconstruction_loss"]
        and history["loss"][1] < history["loss"][0]
    )
    for before, after in zip(frozen, ae.encoder.get_layer("z_log_var").weights, strict=True):
        np.testing.assert_array_equal(before, to_numpy(after)[0])
    x = mnist_test[0][:8]
    np.testing.assert_array_equal(*to_numpy(ae.predict(x, verbose=0), ae.predict(x, verbose=0)))


TRAIN_ELSEWHERE = """
import json, sys, warnings, numpy as np, keras, kvae
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    vae = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
z_mean = keras.ops.convert_to_numpy(vae.encode(x)[0])
np.testing.assert_allclose(z_mean, np.load(sys.argv[3]), atol=1e-5)
history = vae.fit(x, epochs=1, batch_size=16, verbose=0)
assert np.isfinite(history.history["loss"][0]), history.history
adapted = [str(w.message) for w in caught if "is compiled for" in str(w.message)]
print(json.dumps([keras.backend.backend(), adapted]))
"""


@pytest.mark.parametrize("other", [b for b in ("tensorflow", "jax", "torch") if b != BACKEND])
def test_a_saved_model_loads_and_trains_on_every_other_backend(tmp_path, mnist_train, other):
    vae = make_vae()
    vae.compile(optimizer="adam")  # by name, as a user writes it: the saved config names its class
    x = mnist_train[0][:64]
    vae.fit(x, epochs=1, batch_size=16, verbose=0)
    vae.save(tmp_path / "vae.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", to_numpy(vae.encode(x)[0])[0])
    paths = [str(tmp_path / name) for name in ("vae.keras", "x.npy", "z.npy")]
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_ELSEWHERE, *paths],
        env={**os.environ, "KERAS_BACKEND": other},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    backend, messages = json.loads(result.stdout.strip().splitlines()[-1])
    assert backend == other and len(messages) <= 1, messages  # said once, if at all
    if other == "torch":  # 16 steps per call saved; PyTorch runs one
        assert f"saved under {BACKEND}" in messages[0]
        assert "steps_per_execution=16 -> 1" in messages[0]


def test_sample_bounds_its_memory_and_decodes_in_batches():
    vae = make_vae()
    most = 2**30 // (28 * 28 * 4)  # float32 MNIST images in 1 GiB
    with pytest.raises(ValueError, match=rf"n={most + 1:,} images .*at most {most:,} .*several"):
        vae.sample(most + 1)
    n = 2500  # three decoder calls of at most 1,024 codes
    images = vae.sample(n, seed=0)
    z = np.random.default_rng(0).standard_normal((n, 2)).astype("float32")
    np.testing.assert_allclose(images, to_numpy(vae.decode(z))[0], atol=1e-6)

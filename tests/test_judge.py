"""The judge: shipped weights, its measures, and the inputs it refuses."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import kvae
from kvae import judge

BLUR_SIGMA = 1.5  # pixels: digits still legible to a person, the judge much less sure


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of (N, 28, 28, 1) images, written independently of the judge."""
    t = np.arange(-3 * int(np.ceil(sigma)), 3 * int(np.ceil(sigma)) + 1)
    kernel = np.exp(-(t**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    rows = np.apply_along_axis(np.convolve, 1, x[..., 0], kernel, mode="same")
    both = np.apply_along_axis(np.convolve, 2, rows, kernel, mode="same")
    return np.clip(both, 0.0, 1.0)[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def test_scores(mnist_test):
    x, _ = mnist_test
    noise = np.random.default_rng(0).uniform(size=x.shape).astype(np.float32)
    return {
        "real": judge.score(x),
        "blurred": judge.score(gaussian_blur(x, BLUR_SIGMA)),
        "noise": judge.score(noise),
    }


def test_shipped_weights_read_the_bundled_test_digits(mnist_test):
    x, y = mnist_test
    assert judge.accuracy(x, y) >= 0.97


def test_weights_are_small_and_shaped_as_the_architecture():
    params = judge.weights()
    model = judge.build_keras_model()
    for name in judge.LAYERS:
        kernel, bias = model.get_layer(name).weights
        assert params[f"{name}_kernel"].shape == tuple(kernel.shape)
        assert params[f"{name}_bias"].shape == tuple(bias.shape)
    assert sum(v.nbytes for v in params.values()) < 300_000


def test_numpy_forward_pass_matches_keras_on_this_backend(mnist_test):
    """The shipped arrays load into Keras here, and Keras agrees with the NumPy judge."""
    x = mnist_test[0][:256]
    (logits,) = to_numpy(judge.keras_model().predict(x, verbose=0))
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(judge.predict_proba(x), expected, atol=1e-4)


def test_real_digits_beat_blurred_digits_beat_noise(test_scores):
    real, blurred, noise = test_scores["real"], test_scores["blurred"], test_scores["noise"]
    for measure in ("confident", "classifier_score", "rarest_class"):
        values = [getattr(s, measure) for s in (real, blurred, noise)]
        assert values[0] > values[1] > values[2], (measure, values)
    assert real.confident > 0.9 and real.classifier_score > 9.0  # the reference row's level
    assert noise.classifier_score < 1.5  # noise: one class for everything


def test_reference_is_the_test_split_score(test_scores):
    assert judge.reference() == test_scores["real"]


def test_score_values_against_known_distributions():
    # Ten classes, each image certain of its class: score 10, every share 0.1.
    certain = np.repeat(np.eye(10), 3, axis=0)
    s = judge.score_proba(certain)
    assert s.n == 30 and s.confident == 1.0 and s.rarest_class == pytest.approx(0.1)
    assert s.classifier_score == pytest.approx(10.0)
    # Every image the same distribution: KL(p(y|x) || p(y)) = 0, score 1.
    same = np.tile(np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum(), (7, 1))
    assert judge.score_proba(same).classifier_score == pytest.approx(1.0)
    assert judge.score_proba(same).confident == 0.0
    # Two classes, certain, half and half: exp(log 2) = 2.
    two = np.eye(10)[[3, 3, 8, 8]]
    s = judge.score_proba(two)
    assert s.classifier_score == pytest.approx(2.0) and s.rarest_class == 0.0
    assert s.class_shares[3] == s.class_shares[8] == 0.5


def test_confident_threshold_is_inclusive_at_point_nine():
    p = np.zeros((2, 10))
    p[0, 0], p[0, 1] = 0.9, 0.1
    p[1, 0], p[1, 1] = 0.89, 0.11
    assert judge.score_proba(p).confident == 0.5


def test_reconstruction_accuracy_tracks_training(mnist_train, mnist_test):
    """After 3 epochs reconstructions are read as the right digit far above chance (0.1)."""
    x_test, y_test = mnist_test[0][:500], mnist_test[1][:500]
    keras.utils.set_random_seed(0)
    vae = kvae.VAE(
        kvae.build_encoder(8, hidden=(128,)), kvae.build_decoder(8, hidden=(128,)), seed=0
    )
    vae.compile(optimizer=keras.optimizers.Adam(2e-3))
    untrained = judge.reconstruction_accuracy(vae, x_test, y_test)
    vae.fit(mnist_train[0][:4000], epochs=3, batch_size=64, verbose=0)
    trained = judge.reconstruction_accuracy(vae, x_test, y_test)
    assert untrained < 0.25 < 0.4 < trained <= judge.accuracy(x_test, y_test) + 0.02
    # Against labels that do not belong to the images, the same reconstructions score ~ 0.1.
    wrong = np.random.default_rng(0).permutation(y_test)
    assert judge.reconstruction_accuracy(vae, x_test, wrong) < 0.2


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((4, 28, 28)), r"shape \(N, 28, 28, 1\)"),
        (np.zeros((4, 32, 32, 1)), r"shape \(N, 28, 28, 1\)"),
        (np.zeros((0, 28, 28, 1)), "N >= 1"),
        (np.full((2, 28, 28, 1), np.nan), "1568 NaN"),
        (np.full((2, 28, 28, 1), 255.0), r"\[0, 1\].*255"),
        (np.full((2, 28, 28, 1), -0.5), r"\[0, 1\].*-0.5"),
        (np.full((2, 28, 28, 1), "a"), "real-valued"),
    ],
)
def test_bad_images_are_refused(x, message):
    with pytest.raises(ValueError, match=message):
        judge.score(x)


def test_bad_labels_are_refused(mnist_test):
    x, y = mnist_test[0][:5], mnist_test[1][:5]
    with pytest.raises(ValueError, match="expected 5 integer labels"):
        judge.accuracy(x, y[:4])
    with pytest.raises(ValueError, match="integer labels"):
        judge.accuracy(x, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"digits 0..9"):
        judge.accuracy(x, y + 10)


@pytest.mark.parametrize(
    ("p", "words"),
    [
        (np.full((4, 10), np.nan), "40 NaN or infinite"),
        (-np.eye(10), "values >= 0"),
        (np.zeros((0, 10)), "N >= 1"),
        (np.ones((3, 10)), "row sums in [10, 10]"),  # scores, not probabilities
        (np.full((3, 9), 1 / 9), "got (3, 9)"),
    ],
)
def test_score_proba_refuses_what_is_not_probabilities(p, words):
    """Issue 24, item 9: NaN, negative or empty input used to give a nan score silently."""
    with pytest.raises(ValueError) as raised:
        judge.score_proba(p)
    assert words in str(raised.value)


def test_asked_score_reads_how_often_the_asked_digit_was_drawn(mnist_test):
    x, y = mnist_test
    right = judge.asked_score(x, y)  # real digits, asked for what they are
    p = judge.predict_proba(x)
    assert right.n == 2000 and right.as_asked == pytest.approx(judge.accuracy(x, y))
    expected = [np.mean(p[y == d].argmax(axis=1) == d) for d in range(10)]
    np.testing.assert_allclose(right.per_digit, expected)
    assert right.worst_digit == min(expected) > 0.9
    confident = np.mean((p.argmax(axis=1) == y) & (p.max(axis=1) >= judge.CONFIDENT))
    assert right.confident_as_asked == pytest.approx(confident)
    wrong = judge.asked_score(x, (y + 1) % 10)  # every digit asked for as the next one
    assert wrong.as_asked < 0.05 and wrong.confident_as_asked <= wrong.as_asked
    only_sevens = judge.asked_score(x[y == 7], y[y == 7])
    assert (
        np.isnan(only_sevens.per_digit[0]) and only_sevens.worst_digit == only_sevens.per_digit[7]
    )
    with pytest.raises(ValueError, match="labels must be digits 0..9"):
        judge.asked_score(x[:3], np.array([0, 1, 10]))

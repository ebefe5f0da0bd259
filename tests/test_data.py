import subprocess
import sys

import numpy as np
import pytest

import kvae
from kvae.data import check_images


def test_bundled_splits_shapes_and_range(mnist_train, mnist_test):
    for (x, y), n in ((mnist_train, 8000), (mnist_test, 2000)):
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        # Grey levels are whole bytes / 255, as in the original MNIST files.
        np.testing.assert_allclose(x * 255, np.rint(x * 255), atol=1e-4)


def test_split_is_stratified_80_20(mnist_train, mnist_test):
    train_counts = np.bincount(mnist_train[1], minlength=10)
    test_counts = np.bincount(mnist_test[1], minlength=10)
    totals = train_counts + test_counts
    assert totals.sum() == 10_000 and totals.min() == 863 and totals.max() == 1127
    assert np.all(np.abs(train_counts - 0.8 * totals) <= 0.5)


def test_binarize_gives_zeros_and_ones(mnist_test):
    x, _ = kvae.load_mnist("test", binarize=0.5)
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(x, (mnist_test[0] > 0.5).astype(np.float32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "validation"}, "split must be one of"),
        ({"source": "internet"}, "source must be one of"),
        ({"binarize": 1.5}, "binarize must be None or a threshold"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kvae.load_mnist(**kwargs)


@pytest.mark.parametrize(
    "images, message",
    [
        (
            np.zeros((4, 20, 20, 1)),
            r"expected images of shape \(N, 28, 28, 1\), got \(4, 20, 20, 1\)",
        ),
        (np.zeros((4, 784)), r"got \(4, 784\)"),
        (np.full((2, 28, 28, 1), np.nan), "1568 NaN or infinite"),
        (np.full((1, 28, 28, 1), np.inf), "NaN or infinite"),
        (np.full((1, 28, 28, 1), 255.0), r"values in \[0, 1\].*divide uint8 images by 255"),
        (np.full((1, 28, 28, 1), -0.1), r"values in \[0, 1\]"),
    ],
)
def test_check_images_names_the_problem(images, message):
    with pytest.raises(ValueError, match=message):
        check_images(images)


def test_both_likelihoods_refuse_bytes():
    for likelihood in ("bernoulli", "gaussian"):
        with pytest.raises(ValueError, match=rf"{likelihood} likelihood needs pixel values"):
            check_images(np.full((1, 28, 28, 1), 2.0), likelihood=likelihood)
        with pytest.raises(ValueError, match=r"got dtype uint8.*/ 255"):
            check_images(np.zeros((1, 28, 28, 1), np.uint8), likelihood=likelihood)


def test_unknown_sides_match_any_size():
    check_images(np.zeros((2, 28, 28, 1), "float32"), image_shape=(None, None, 1))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, None, None, 1\)"):
        check_images(np.zeros((2, 28, 28, 3), "float32"), image_shape=(None, None, 1))


def test_data_imports_no_keras():
    """kvae.data is the one module the command's prologue may import before choosing a backend."""
    code = "import sys, kvae.data; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_a_bundle_with_fewer_digits_is_refused(tmp_path, monkeypatch):
    """Issue 24, item 9: a damaged bundle holding 100 training digits used to train on 100."""
    from kvae import data

    with np.load(data.ASSET_CANDIDATES[0]) as arrays:
        damaged = {name: arrays[name] for name in arrays.files}
    damaged["x_train"], damaged["y_train"] = damaged["x_train"][:100], damaged["y_train"][:100]
    np.savez(tmp_path / "mnist_subset.npz", **damaged)
    monkeypatch.setattr(data, "ASSET_CANDIDATES", (tmp_path / "mnist_subset.npz",))
    with pytest.raises(data.MnistUnavailableError, match=r"8000 images .* got images \(100, 28"):
        data.load_mnist("train")
    assert data.load_mnist("test")[0].shape == (2000, 28, 28, 1)  # the intact split still loads

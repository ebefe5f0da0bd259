"""kvae.evaluate: the importance-weighted pass fits its memory budget and gives the same numbers.

The judge's readings are seeded by the config.
"""

import numpy as np
import pytest

from kvae import config, evaluate


@pytest.mark.parametrize(("samples", "kind"), [(50, "mlp"), (10_000, "mlp"), (10_000, "conv")])
def test_each_decoder_pass_fits_the_memory_budget(samples, kind):
    hidden = (config.MAX_WIDTH,) * 2 if kind == "mlp" else (512,)
    digits, k_chunk = evaluate.iw_pass_size(samples, hidden, kind)
    floats = 2 * (config.PIXELS + sum(hidden)) if kind == "mlp" else 64 * config.PIXELS
    assert 1 <= k_chunk <= samples and 1 <= digits <= evaluate.IW_BATCH
    assert digits * k_chunk * floats * 4 <= config.IW_MEMORY_BUDGET
    if k_chunk < samples:  # k itself had to be cut: one digit at a time, as many as fit
        assert digits == 1 and (k_chunk + 1) * floats * 4 > config.IW_MEMORY_BUDGET


def test_cutting_k_into_chunks_gives_the_same_bound(small_vae, mnist_test, monkeypatch):
    x = mnist_test[0][:5]
    monkeypatch.setattr(evaluate, "IW_BATCH", 1)  # one digit a pass: the noise is drawn alike
    assert evaluate.iw_pass_size(16, (64,)) == (1, 16)
    whole = evaluate.importance_weighted_log_px(small_vae, x, 16, seed=3, hidden=(64,))
    # A budget of 5 images a pass: k = 16 is cut into chunks of 5, 5, 5 and 1.
    monkeypatch.setattr(evaluate, "IW_MEMORY_BUDGET", 5 * 4 * 2 * (784 + 64))
    assert evaluate.iw_pass_size(16, (64,)) == (1, 5)
    chunked = evaluate.importance_weighted_log_px(small_vae, x, 16, seed=3, hidden=(64,))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    assert whole[1] <= whole[0]  # the ELBO is below the k-sample bound (Jensen)


def test_judge_metrics_are_seeded_by_the_config(small_vae, mnist_train, mnist_test):
    """Same seed, same figures; another seed, other samples: nothing is drawn unseeded."""
    data = {
        "train": (mnist_train[0][:300], None),
        "test": (mnist_test[0][:200], mnist_test[1][:200]),
    }
    one = config.TrainConfig(judge_samples=300, mixture_components=4, seed=5)
    first, again = (evaluate.judge_metrics(small_vae, data, one) for _ in range(2))
    assert first == again
    other = evaluate.judge_metrics(small_vae, data, config.TrainConfig(judge_samples=300, seed=6))
    for name in evaluate.SAMPLERS:
        assert first[f"{name}_score"] != other[f"{name}_score"], name  # other images
        assert sum(first[f"{name}_class_shares"]) == pytest.approx(1.0)
    # The reconstructions do not depend on the seed: the posterior mean is decoded.
    assert first["reconstruction_accuracy"] == other["reconstruction_accuracy"]
    assert first["mixture_components"] == 4 and first["judge_samples"] == 300

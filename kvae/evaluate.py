"""Evaluation: a trained VAE's test ELBO, its importance-weighted log p(x), the judge's readings.

The mathematics lives in ``kvae.elbo`` (``importance_log_weights``,
``importance_weighted_bound``); this module runs the model over the test
digits, sizes each decoder pass against ``kvae.config.IW_MEMORY_BUDGET`` and
returns plain numbers, in nats per example, for ``metrics.json``.
"""

import numpy as np
from keras import ops

from kvae import elbo, judge
from kvae.conditional import NUM_CLASSES
from kvae.config import CONDITIONAL_SAMPLER, IW_MEMORY_BUDGET, PIXELS
from kvae.fitting import fit_samplers, model_inputs

__all__ = [
    "CONDITIONAL_SAMPLERS",
    "IW_BATCH",
    "SAMPLERS",
    "encode",
    "evaluate",
    "importance_weighted_log_px",
    "iw_pass_size",
    "judge_metrics",
    "map_metrics",
]

IW_BATCH = 100  # test digits per importance-sampling pass, if the memory budget allows
SAMPLERS = ("prior", "mixture", "aggregate")  # N(0, I), Gaussian mixture, q(z) = mean q(z|x_i)
# A conditional run's: N(0, I), every digit's codes pooled, each digit's own (PerClassSampler).
CONDITIONAL_SAMPLERS = ("prior", "aggregate", "per_class")


def evaluate(vae, data, config, verbose=0):
    """The test-set ELBO and the importance-weighted bound, in nats per example.

    ``reconstruction`` and ``kl`` are the two terms with beta = 1, whatever beta
    the model was trained with, so runs with different betas compare on one
    scale: ``elbo = -(reconstruction + kl)``. ``iw_log_px`` is the k-sample
    importance-weighted bound on ``log p(x)`` (Burda et al. 2016) on the first
    ``iw_examples`` test digits; ``iw_elbo`` is the ELBO on those same digits,
    averaged over the same k samples. ``iw_elbo <= iw_log_px`` always (a log-mean-exp is
    at least the mean), and ``iw_log_px <= log p(x)`` on average over the samples. For a
    conditional model every term is given the test digits' labels: the bounds are on
    ``log p(x|y)``.
    """
    x_test, y_test = data["test"]
    inputs = model_inputs(config, data["test"])
    results = vae.evaluate(*inputs, batch_size=config.batch_size, verbose=verbose, return_dict=True)
    reconstruction, kl = results["reconstruction_loss"], results["kl_loss"]
    labels = y_test if config.conditional else None
    iw_log_px, iw_elbo = importance_weighted_log_px(
        vae,
        x_test[: config.iw_examples],
        config.iw_samples,
        config.seed,
        config.hidden,
        config.kind,
        None if labels is None else labels[: config.iw_examples],
    )
    z_mean, z_log_var = encode(vae, x_test, labels)
    return {
        "reconstruction": float(reconstruction),
        "kl": float(kl),
        "elbo": -float(reconstruction + kl),
        "loss": float(results["loss"]),
        "beta": config.beta,
        "iw_log_px": iw_log_px,
        "iw_elbo": iw_elbo,
        "iw_samples": config.iw_samples,
        "iw_examples": int(min(config.iw_examples, len(x_test))),
        "mean_sigma": float(np.mean(np.exp(0.5 * z_log_var))),
        "mean_abs_z_mean": float(np.mean(np.abs(z_mean))),
        "test_examples": len(x_test),
    }


def judge_metrics(vae, data, config, samplers=None):
    """What the judge (``kvae.judge``) reads in the model's reconstructions and samples.

    ``reconstruction_accuracy``: share of the test reconstructions that are the
    right digit. For each sampler in ``SAMPLERS``, ``config.judge_samples``
    images drawn with ``config.seed``: ``<sampler>_confident`` (share with
    max p(y|x) >= 0.9), ``<sampler>_score`` (classifier score, 10 at best),
    ``<sampler>_rarest`` (share of the rarest digit, 0.1 at best) and
    ``<sampler>_class_shares``. ``reference_*``: the same for the real test
    digits (``kvae.judge.reference()``), the row to compare against.

    A conditional model's samplers are ``CONDITIONAL_SAMPLERS``, its images
    asked for the ten digits in turn (image i for digit i % 10), and each
    sampler also gets the judge's reading of the asks: ``<sampler>_as_asked``
    (share read as the digit asked for), ``<sampler>_as_asked_per_digit``,
    ``<sampler>_as_asked_worst`` (the least well drawn digit's share) and
    ``<sampler>_confident_as_asked`` (read as asked with p(y|x) >= 0.9);
    ``conditional_sampler`` names the one the run is judged by
    (``kvae.config.CONDITIONAL_SAMPLER``). Its reconstructions are given
    the true labels.
    """
    samplers = fit_samplers(vae, data, config) if samplers is None else samplers
    x_test, y_test = data["test"]
    metrics = {"reconstruction_accuracy": judge.reconstruction_accuracy(vae, x_test, y_test)}
    scores = {}
    if config.conditional:
        asked = np.arange(config.judge_samples) % NUM_CLASSES
        for name in CONDITIONAL_SAMPLERS:
            images = vae.sample(len(asked), asked, sampler=samplers[name], seed=config.seed)
            metrics.update(asked_metrics(name, judge.asked_score(images, asked)))
            scores[name] = judge.score(images)
        metrics["conditional_sampler"] = CONDITIONAL_SAMPLER
    for name in () if config.conditional else SAMPLERS:
        images = vae.sample(config.judge_samples, sampler=samplers[name], seed=config.seed)
        scores[name] = judge.score(images)
    scores["reference"] = judge.reference()
    for name, score in scores.items():
        metrics[f"{name}_confident"] = score.confident
        metrics[f"{name}_score"] = score.classifier_score
        metrics[f"{name}_rarest"] = score.rarest_class
        metrics[f"{name}_class_shares"] = list(score.class_shares)
    metrics["judge_samples"] = config.judge_samples
    metrics["reference_examples"] = scores["reference"].n
    if not config.conditional:
        metrics["mixture_components"] = config.mixture_components
    return metrics


def asked_metrics(name, score):
    """A ``kvae.judge.AskedScore`` as ``metrics.json`` keys, prefixed with the sampler's name."""
    return {
        f"{name}_as_asked": score.as_asked,
        f"{name}_as_asked_per_digit": list(score.per_digit),
        f"{name}_as_asked_worst": score.worst_digit,
        f"{name}_confident_as_asked": score.confident_as_asked,
    }


def map_metrics(map_vae, data, config):
    """The 2-D companion's test ELBO and right-digit share, so its figures can be weighed."""
    if map_vae is None:
        return {}
    x_test, y_test = data["test"]
    inputs = model_inputs(config, data["test"])
    results = map_vae.evaluate(*inputs, batch_size=config.batch_size, verbose=0, return_dict=True)
    return {
        "map_latent_dim": 2,
        "map_epochs": config.map_epochs,
        "map_elbo": -float(results["reconstruction_loss"] + results["kl_loss"]),
        "map_reconstruction_accuracy": judge.reconstruction_accuracy(map_vae, x_test, y_test),
    }


def importance_weighted_log_px(vae, x, samples, seed, hidden=(512,), kind="mlp", labels=None):
    """Mean over ``x`` of the k-sample bound on ``log p(x)``, and of the ELBO, in nats.

    Draws ``z_s = z_mean + sigma * eps_s`` from ``q(z|x)`` with NumPy noise, so
    the estimate is reproducible on every backend, and scores each sample with
    ``kvae.elbo.importance_log_weights``. The decoder runs on at most
    ``iw_pass_size(...)`` images at once (``kvae.config.IW_MEMORY_BUDGET``):
    fewer digits per pass when k is large, and k itself cut into chunks when one
    digit's k samples would not fit. A conditional model is given ``labels``,
    one per image, in ``q(z|x, y)`` and ``p(x|z, y)``: the bound is on ``log p(x|y)``.
    """
    rng = np.random.default_rng(seed)
    digits, k_chunk = iw_pass_size(samples, hidden, kind)
    bounds, elbos = [], []
    for start in range(0, len(x), digits):
        batch = x[start : start + digits]
        given = None if labels is None else labels[start : start + digits]
        z_mean, z_log_var = encode(vae, batch, given)  # (B, D) each
        eps = rng.standard_normal((samples, *z_mean.shape)).astype("float32")  # (k, B, D)
        z = z_mean + np.exp(0.5 * z_log_var) * eps
        log_weights = np.concatenate(
            [
                _log_weights(vae, batch, z[i : i + k_chunk], z_mean, z_log_var, given)
                for i in range(0, samples, k_chunk)
            ]
        )  # (k, B)
        bounds.append(_numpy(elbo.importance_weighted_bound(log_weights)))
        elbos.append(np.mean(log_weights, axis=0))
    return float(np.mean(np.concatenate(bounds))), float(np.mean(np.concatenate(elbos)))


def iw_pass_size(samples, hidden=(512,), kind="mlp"):
    """``(digits, k_chunk)`` per decoder pass, so one pass stays within the memory budget.

    An MLP decoder holds its hidden activations and the logits for each image; a
    conv decoder's largest feature maps are about 64 channels at 28 x 28.
    """
    floats = 2 * (PIXELS + sum(hidden)) if kind == "mlp" else 64 * PIXELS
    images = max(1, IW_MEMORY_BUDGET // (4 * floats))
    if samples <= images:
        return max(1, min(IW_BATCH, images // samples)), samples
    return 1, images


def _log_weights(vae, batch, z, z_mean, z_log_var, labels=None):
    """``log p(x, z_s) - log q(z_s|x)`` for the samples ``z`` (k, B, D); NumPy (k, B)."""
    flat = np.reshape(z, (-1, z.shape[-1]))  # (k * B, D): sample s of digit b at row s * B + b
    if labels is None:
        logits = _numpy(vae.decoder(flat))  # (k * B, 28, 28, 1)
    else:
        logits = _numpy(vae.decoder([flat, vae.condition(np.tile(labels, len(z)), len(flat))]))
    logits = logits.reshape((len(z), len(batch), *batch.shape[1:]))
    return _numpy(elbo.importance_log_weights(batch, z, z_mean, z_log_var, logits))


def encode(vae, x, labels=None, batch_size=500):
    """``(z_mean, z_log_var)`` as NumPy arrays, (N, latent_dim) each; ``labels`` for a
    conditional model, one per image."""
    z_means, z_log_vars = [], []
    for start in range(0, len(x), batch_size):
        given = () if labels is None else (labels[start : start + batch_size],)
        z_mean, z_log_var = vae.encode(x[start : start + batch_size], *given)
        z_means.append(_numpy(z_mean))
        z_log_vars.append(_numpy(z_log_var))
    return np.concatenate(z_means), np.concatenate(z_log_vars)


def _numpy(tensor):
    return ops.convert_to_numpy(tensor)

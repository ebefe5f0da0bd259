"""TrainConfig owns every range; kvae.config, kvae.rundir and kvae.cli load without Keras."""

import dataclasses
import os
import subprocess
import sys

import pytest

from kvae import config
from kvae.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("seed", 2**32, ["seed", "4294967295", "4294967296"]),
        ("seed", -1, ["seed", "-1"]),
        ("latent_dim", 0, ["latent_dim", "0"]),
        ("latent_dim", config.MAX_LATENT_DIM + 1, ["latent_dim", "785"]),
        ("batch_size", 10**7, ["batch_size", "60000"]),
        ("hidden", (10**8,), ["hidden", "16384"]),
        ("hidden", (64,) * 17, ["hidden", "16"]),
        ("hidden", (), ["hidden"]),
        ("iw_samples", 10**6, ["iw_samples", "10000"]),
        ("iw_examples", 0, ["iw_examples"]),
        ("learning_rate", 1e-320, ["learning_rate", "1e-08"]),
        ("learning_rate", 1e12, ["learning_rate", "10"]),
        ("learning_rate", float("nan"), ["learning_rate", "nan"]),
        ("beta", -0.5, ["beta", "-0.5"]),
        ("beta", float("inf"), ["beta", "inf"]),
        ("epochs", True, ["epochs", "True"]),
        ("train_size", 8001, ["train_size", "8000", "8001"]),
        ("kind", "rnn", ["kind", "rnn"]),
        ("source", "web", ["source", "web"]),
        ("mixture_components", 0, ["mixture_components", "[1, 1000]", "0"]),
        ("mixture_components", 1001, ["mixture_components", "1000", "1001"]),
        ("judge_samples", 0, ["judge_samples", "0"]),
        ("judge_samples", 100_001, ["judge_samples", "100000", "100001"]),
        ("judge_samples", 2.5, ["judge_samples", "2.5"]),
        ("map_epochs", -1, ["map_epochs", "-1"]),
        ("devices", 0, ["devices", "0"]),
        ("devices", config.MAX_DEVICES + 1, ["devices", "60000", "60001"]),
        ("devices", 2.0, ["devices", "2.0"]),
        ("conditional", 1, ["conditional", "True or False", "1"]),
    ],
)
def test_out_of_range_values_are_refused_with_their_field(field, value, words):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**{field: value})
    assert raised.value.field == field
    for word in words:
        assert word in str(raised.value)


def test_the_bounds_themselves_are_accepted():
    edge = TrainConfig(
        seed=2**32 - 1,
        latent_dim=1,
        learning_rate=config.MIN_LEARNING_RATE,
        iw_samples=config.MAX_IW_SAMPLES,
        train_size=8000,
    )
    assert edge.seed == 2**32 - 1
    assert TrainConfig(source="keras", train_size=60000).train_size == 60000
    judged = TrainConfig(
        mixture_components=config.MAX_MIXTURE_COMPONENTS,
        judge_samples=config.MAX_JUDGE_SAMPLES,
        map_epochs=0,
    )
    assert judged.judge_samples == 100_000 and judged.map_epochs == 0
    assert TrainConfig(train_size=7, mixture_components=7).mixture_components == 7


def test_each_kind_of_model_has_its_own_code_size_and_epochs_by_default():
    vae, conditional = TrainConfig(), TrainConfig(conditional=True)
    assert (vae.latent_dim, vae.epochs) == (16, 30)
    assert (conditional.latent_dim, conditional.epochs) == (2, 60)
    assert config.CONDITIONAL_DEFAULTS == {"latent_dim": 2, "epochs": 60}
    given = TrainConfig(conditional=True, latent_dim=16, epochs=3)
    assert (given.latent_dim, given.epochs) == (16, 3)
    assert dataclasses.asdict(conditional)["latent_dim"] == 2  # config.json holds the number
    assert dataclasses.replace(conditional, seed=1).epochs == 60
    old = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k != "conditional"}
    assert TrainConfig.from_dict(old).conditional is False  # a run from before the option
    assert config.defaults()["latent_dim"] == 16 and config.defaults()["epochs"] == 30


def test_a_conditional_run_asks_for_every_digit_at_least_once():
    with pytest.raises(ConfigError) as raised:
        TrainConfig(conditional=True, judge_samples=9)
    assert raised.value.field == "judge_samples" and "at least 10" in str(raised.value)
    assert TrainConfig(judge_samples=9).judge_samples == 9


def test_a_mixture_needs_a_training_code_per_component():
    with pytest.raises(ConfigError) as raised:
        TrainConfig(train_size=7, mixture_components=8)
    assert raised.value.field == "mixture_components"
    assert "at most the 7 training digits" in str(raised.value) and "got 8" in str(raised.value)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"devices": 3}, ["devices=3", "a batch of size 128"]),
        ({"devices": 2, "train_size": 513, "batch_size": 64}, ["last training batch of size 1"]),
        ({"devices": 32, "train_size": 960, "batch_size": 96}, ["last test batch of size 80"]),
    ],
)
def test_several_devices_need_batches_that_split_evenly(values, words):
    """Keras cuts every batch into equal shares, the last of each split too."""
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**values)
    assert raised.value.field == "devices"
    for word in words:
        assert word in str(raised.value)
    # 8000 = 31 * 256 + 64 and 2000 = 7 * 256 + 208: every batch splits 16 ways.
    assert TrainConfig(devices=16, batch_size=256).devices == 16


@pytest.mark.parametrize("backend", config.BACKENDS)
def test_several_devices_need_a_backend_keras_trains_in_parallel_on(backend):
    config.require_parallel_backend(1, backend)  # one device: no distribution, any backend
    if backend in config.PARALLEL_BACKENDS:
        config.require_parallel_backend(2, backend)
        return
    with pytest.raises(ConfigError) as raised:
        config.require_parallel_backend(2, backend)
    assert raised.value.field == "devices"
    assert f"devices=2 needs the jax backend, got {backend!r}" in str(raised.value)


def test_split_sizes_are_the_bundled_data():
    from kvae.data import load_mnist

    for split, size in config.SPLIT_SIZES["bundled"].items():
        assert len(load_mnist(split)[0]) == size


def test_from_dict_refuses_unknown_keys_and_non_objects():
    values = dataclasses.asdict(TrainConfig(hidden=(32, 16)))
    assert TrainConfig.from_dict(values) == TrainConfig(hidden=(32, 16))
    del values["devices"]  # a run saved before the field existed trained on one device
    assert TrainConfig.from_dict(values).devices == 1
    with pytest.raises(ConfigError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({**values, "colour": "red"})
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict([1, 2])


def test_train_module_reexports_the_config():
    from kvae import train

    assert train.TrainConfig is TrainConfig and train.ConfigError is ConfigError


def test_command_line_modules_import_no_keras():
    code = (
        "import sys, kvae.cli, kvae.config, kvae.rundir; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'matplotlib')))"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("lang", "verbose", "words"),
    [
        ("fr", 1, "lang must be one of ('en', 'ko'), got 'fr'"),
        (None, 1, "got None"),
        ("en", "loud", "verbose must be one of (0, 1, 2), got 'loud'"),
        ("en", True, "got True"),
        ("en", 3, "got 3"),
    ],
)
def test_run_options_are_refused_by_name(lang, verbose, words):
    """Issue 24, items 9-10: lang and verbose are checked before a run trains."""
    from kvae.config import require_run_options

    with pytest.raises(ConfigError) as raised:
        require_run_options(lang, verbose)
    assert words in str(raised.value)
    require_run_options("ko", 0)  # the accepted values pass

"""``train_and_evaluate`` and ``sweep`` refuse a bad ``lang`` or ``verbose`` before training.

Both options are read late (the figures' labels after training, the progress display
inside Keras), so before issue 24 a typo cost a whole run, or was silently accepted.
"""

import pytest

from kvae import train
from kvae.config import ConfigError, TrainConfig

# Small enough that, were the check missing, the test would still end in seconds.
TINY = TrainConfig(
    epochs=1,
    train_size=64,
    hidden=(16,),
    iw_examples=10,
    iw_samples=2,
    judge_samples=20,
    mixture_components=2,
    map_epochs=0,
)


@pytest.mark.parametrize(
    ("options", "words"),
    [({"lang": "fr"}, "lang must be one of"), ({"verbose": "loud"}, "verbose must be one of")],
)
@pytest.mark.parametrize("run", ["train_and_evaluate", "sweep"])
def test_a_bad_option_is_refused_before_training(tmp_path, capsys, options, words, run):
    out = tmp_path / "run"
    call = {
        "train_and_evaluate": lambda: train.train_and_evaluate(TINY, out, **options),
        "sweep": lambda: train.sweep([1.0], TINY, out, **options),
    }[run]
    with pytest.raises(ConfigError, match=words):
        call()
    assert list(tmp_path.iterdir()) == []  # not even the lock was taken
    printed = capsys.readouterr().out
    assert "Epoch" not in printed and "beta =" not in printed

"""A run's settings, their choices and their bounds: checked before Keras is imported.

``TrainConfig`` is the one place that says which values a run accepts. The
``kvae`` command builds one from its arguments and refuses a bad value with
status 2 before anything heavy loads; ``kvae.train`` re-exports it for
notebooks. This module imports nothing from Keras or from kvae's Keras-using
modules, so its choices are defined here and the other modules import them.
"""

import dataclasses
import math

BACKENDS = ("tensorflow", "jax", "torch")  # the backends kvae is tested on
KINDS = ("mlp", "conv")  # encoder and decoder networks (kvae.networks)
SOURCES = ("bundled", "keras")  # where the digits come from (kvae.data)
LANGS = ("en", "ko")  # the figures' label languages (kvae.plots)
VERBOSITIES = (0, 1, 2)  # Keras's fit(verbose=...): silent, a progress bar, one line per epoch
# Backends whose Keras splits a batch across devices (keras.distribution.DataParallel):
# under TensorFlow Keras accepts the distribution and trains on one device anyway,
# and under PyTorch keras.distribution has no implementation at all.
PARALLEL_BACKENDS = ("jax",)
# Digits per split, so that --train-size is checked before the data loads.
SPLIT_SIZES = {"bundled": {"train": 8000, "test": 2000}, "keras": {"train": 60000, "test": 10000}}
PIXELS = 28 * 28
DIGITS = 10  # MNIST's classes: what a conditional model is told and asked for

# Upper bounds, each with its reason. A value past one would not fail usefully: it
# would exhaust memory or run for days, and only after the data had loaded.
MAX_SEED = 2**32 - 1  # NumPy and the backends take 32-bit seeds
MAX_LATENT_DIM = PIXELS  # a code wider than the image it describes has nothing left to learn
MAX_WIDTH = 16384  # a 784 x 16384 dense layer is 12.8 M weights; wider will not fit a laptop
MAX_LAYERS = 16  # deeper plain MLPs or conv stacks stop training without residual links
MAX_BATCH_SIZE = 60000  # the whole MNIST training split: a larger batch is the same batch
MAX_DEVICES = MAX_BATCH_SIZE  # each device takes an equal share of a batch, at least one digit
MAX_EPOCHS = 100_000  # weeks on a CPU: a larger number is a typo
MAX_IW_SAMPLES = 10_000  # Burda et al. (2016) use 5,000; each is one decoder pass per digit
MAX_IW_EXAMPLES = 10_000  # the largest test split
# The judge reads about 1,000 images a second on a busy 2-core CPU: 100,000 samples per
# sampler is minutes of judging, and the shares are then known to +-0.002 already.
MAX_JUDGE_SAMPLES = 100_000
# A full-covariance mixture component holds d(d+1)/2 + d numbers; past 1,000 components
# the fit on 8,000 codes has fewer codes than parameters per component and only overfits.
MAX_MIXTURE_COMPONENTS = 1000
# Adam's step: below 1e-8 a float32 weight of typical size (1e-2) no longer changes
# (its spacing is about 1e-9), so nothing trains; above 10 the first step already
# throws every weight far out of range.
MIN_LEARNING_RATE = 1e-8
MAX_LEARNING_RATE = 10.0
# The importance-weighted pass decodes k samples for a batch of digits at once; it is
# cut into passes whose activations stay under this many bytes (batching over k too).
IW_MEMORY_BUDGET = 256 * 2**20

# The defaults that differ between the two kinds of run (TrainConfig.conditional).
# A VAE's code must tell the ten digits apart: 2 dimensions cannot hold them apart (the 2-D
# model reconstructs 46% as the right digit), 16 get 94% right, in 30 epochs (about a minute).
VAE_DEFAULTS = {"latent_dim": 16, "epochs": 30}
# A conditional VAE is told the digit, so its code need hold only the style (slant, width,
# stroke), and two numbers hold it: every digit in every style of a 2-D code is drawn and
# can be shown whole. A wider code holds more style, but N(0, I) then falls into holes no
# digit's codes fill (4-D: 90-92% of prior samples are the digit asked for; 16-D, in a
# plain Keras CVAE: 66%). Samples are drawn where the asked digit's own training codes are
# (CONDITIONAL_SAMPLER): in 2-D the judge reads 98.3-99.4% of them as the digit asked for,
# the least well drawn digit 91-97.5% (eight runs on three backends; README.md). 60 epochs,
# not 30: that least well drawn digit gains about 1.5 points (two seeds), for a run of
# about two minutes.
CONDITIONAL_DEFAULTS = {"latent_dim": 2, "epochs": 60}
# The conditional run's headline sampler (kvae.evaluate.CONDITIONAL_SAMPLERS): each digit's
# aggregate posterior q(z|y), the codes of that digit's training images (PerClassSampler).
# N(0, I), judged beside it, reads as asked a little less often in 2-D (96.9-99.2%): its
# tails lie beyond any training code of the digit, where the decoder was never taught.
CONDITIONAL_SAMPLER = "per_class"


class ConfigError(ValueError):
    """A setting or a run folder that cannot work; the message names it and what was expected.

    ``field`` is the ``TrainConfig`` field at fault, if one is (the command line
    names its option).
    """

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, with its default and the reason for it.

    The defaults train in about a minute on two CPU cores with the bundled data
    and give a model whose reconstructions the judge (``kvae.judge``) reads as
    the right digit about 94% of the time and whose mixture samples are
    confidently a digit about 80% of the time; a small 2-D companion model
    (``map_epochs``) is trained alongside for the figures that need two
    dimensions. With ``conditional=True`` the run trains a ``kvae.ConditionalVAE``
    with its own defaults (``CONDITIONAL_DEFAULTS``: a 2-D code, 60 epochs, about
    two minutes), whose samples the judge reads as the digit asked for about 99%
    of the time. The bounds above
    (``MAX_*``) are checked here, so the command line and notebooks refuse the
    same values with the same message.

    Raises:
        ConfigError: a value outside its type or bounds; the message names the
            field, what was expected and what was received.
    """

    # None: 16 for a VAE, 2 for a conditional VAE, each for its reason above
    # (VAE_DEFAULTS, CONDITIONAL_DEFAULTS); the config then holds the number.
    latent_dim: int | None = None
    kind: str = "mlp"  # dense layers train fastest on a CPU; "conv" is sharper and slower
    hidden: tuple[int, ...] = (512, 256)  # a second, narrower layer: sharper digits, few weights
    beta: float = 1.0  # weight of the KL term; 1 makes the loss exactly the negative ELBO
    # None: 30 for a VAE (reconstructions still improve up to about 30 epochs; about a
    # minute), 60 for a conditional VAE (its least well drawn digit still improves).
    epochs: int | None = None
    batch_size: int = 128  # 63 steps per epoch on 8,000 digits: enough updates, cheap steps
    learning_rate: float = 1e-3  # Adam's usual step; much larger ones can make the loss NaN
    seed: int = 0  # weights, noise and shuffling: the same seed repeats a run on one backend
    source: str = "bundled"  # the 8,000 / 2,000 real digits that ship with kvae: no network
    train_size: int | None = None  # None: the whole training split; fewer for a quick check
    iw_samples: int = 50  # k in the importance-weighted bound on log p(x)
    iw_examples: int = 500  # test digits for that bound: k decoder passes each
    # The prior's holes: N(0, I) samples of a 16-D code are mostly blobs, a mixture fitted
    # to the training codes draws where they are; 20 components (two per digit) cover the
    # shapes of each digit's cloud, 10 leave some digits out (Ghosh et al. 2020).
    mixture_components: int = 20
    judge_samples: int = 2000  # per sampler: shares known to about +-0.01 (binomial s.e.)
    # A second VAE with a 2-D code, trained in the same run only for the figures that
    # need two dimensions (scatter with ellipses, decoded grid); 0 trains none. Not
    # trained when latent_dim is 2: the model itself is drawn whole.
    map_epochs: int = 10
    # Devices that share each batch (keras.distribution.DataParallel, JAX only): 1 runs
    # on Keras's default device with no distribution, the same on every backend.
    devices: int = 1
    # A kvae.ConditionalVAE, trained on (digits, labels) and asked for chosen digits,
    # instead of a VAE; its code size defaults to CONDITIONAL_LATENT_DIM.
    conditional: bool = False

    def __post_init__(self):
        if not isinstance(self.conditional, bool):
            raise ConfigError(
                f"conditional must be True or False, got {self.conditional!r}", "conditional"
            )
        kind_defaults = CONDITIONAL_DEFAULTS if self.conditional else VAE_DEFAULTS
        for name, default in kind_defaults.items():
            if getattr(self, name) is None:  # frozen: set once, here, to the kind's default
                object.__setattr__(self, name, default)
        _require_int(self, "latent_dim", 1, MAX_LATENT_DIM)
        _require_int(self, "epochs", 1, MAX_EPOCHS)
        _require_int(self, "batch_size", 1, MAX_BATCH_SIZE)
        _require_int(self, "seed", 0, MAX_SEED)
        _require_int(self, "iw_samples", 1, MAX_IW_SAMPLES)
        _require_int(self, "iw_examples", 1, MAX_IW_EXAMPLES)
        _require_int(self, "mixture_components", 1, MAX_MIXTURE_COMPONENTS)
        _require_int(self, "judge_samples", 1, MAX_JUDGE_SAMPLES)
        if self.conditional and self.judge_samples < DIGITS:
            raise ConfigError(
                f"judge_samples must be at least {DIGITS} in a conditional run, which asks for "
                f"every digit, got {self.judge_samples}",
                "judge_samples",
            )
        _require_int(self, "map_epochs", 0, MAX_EPOCHS)
        _require_choice(self, "kind", KINDS)
        _require_choice(self, "source", SOURCES)
        if self.train_size is not None:
            _require_int(self, "train_size", 1, SPLIT_SIZES[self.source]["train"])
        training = self.train_size or SPLIT_SIZES[self.source]["train"]
        if self.mixture_components > training:  # each component needs a code of its own
            raise ConfigError(
                f"mixture_components must be at most the {training} training digits, "
                f"got {self.mixture_components}",
                "mixture_components",
            )
        hidden = self.hidden
        if not isinstance(hidden, tuple) or not 1 <= len(hidden) <= MAX_LAYERS:
            raise ConfigError(
                f"hidden must be a tuple of 1 to {MAX_LAYERS} layer widths, got {hidden!r}",
                "hidden",
            )
        for width in hidden:
            if not _is_int(width) or not 1 <= width <= MAX_WIDTH:
                raise ConfigError(
                    f"hidden widths must be integers in [1, {MAX_WIDTH}], got {hidden!r}",
                    "hidden",
                )
        _require_number(self, "beta", 0.0, math.inf)
        _require_number(self, "learning_rate", MIN_LEARNING_RATE, MAX_LEARNING_RATE)
        _require_int(self, "devices", 1, MAX_DEVICES)
        if self.devices > 1:
            self._require_even_shares()

    def _require_even_shares(self):
        """Every batch of a data-parallel run, the last one of an epoch too, splits evenly.

        Keras shards each batch across the devices and refuses a batch that does not
        divide; the last batch of the training split and of the test split (the
        validation pass) hold what is left over after the full batches.
        """
        training = self.train_size or SPLIT_SIZES[self.source]["train"]
        test = SPLIT_SIZES[self.source]["test"]
        batches = {
            "a batch": self.batch_size,
            "the last training batch": training % self.batch_size,
            "the last test batch": test % self.batch_size,
        }
        for name, size in batches.items():
            if size % self.devices:
                raise ConfigError(
                    f"devices must divide every batch evenly, got devices={self.devices} "
                    f"and {name} of size {size} (batch_size={self.batch_size}; "
                    f"{training} training and {test} test digits)",
                    "devices",
                )

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config from ``config.json``; unknown keys are refused, not ignored."""
        if not isinstance(values, dict):
            raise ConfigError(f"expected a JSON object of TrainConfig fields, got {values!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown TrainConfig keys {unknown}; expected some of {sorted(known)}"
            )
        values = dict(values)
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


def require_parallel_backend(devices, backend):
    """Refuse ``devices > 1`` unless ``backend`` is one Keras trains in parallel on.

    Raises:
        ConfigError: ``devices`` above 1 on a backend not in ``PARALLEL_BACKENDS``.
    """
    if devices > 1 and backend not in PARALLEL_BACKENDS:
        raise ConfigError(
            f"devices={devices} needs the jax backend, got {backend!r}: Keras's "
            "DataParallel trains on several devices only under JAX (TensorFlow ignores it "
            "and trains on one device, PyTorch has none); use devices=1 or the jax backend",
            "devices",
        )


def require_run_options(lang, verbose):
    """Refuse a ``lang`` or ``verbose`` a run cannot use, before it trains.

    Both are only read late (the figures' labels after training, the progress
    display by Keras), so a typo would otherwise cost a whole run.

    Raises:
        ConfigError: the option, what was expected and what was received.
    """
    if not isinstance(lang, str) or lang not in LANGS:
        raise ConfigError(f"lang must be one of {LANGS}, got {lang!r}", "lang")
    if not _is_int(verbose) or verbose not in VERBOSITIES:
        raise ConfigError(f"verbose must be one of {VERBOSITIES}, got {verbose!r}", "verbose")


def defaults():
    """``{field name: default}`` of a VAE's ``TrainConfig``: what ``--help`` shows."""
    return dataclasses.asdict(TrainConfig())


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int(config, name, minimum, maximum):
    value = getattr(config, name)
    if not _is_int(value) or not minimum <= value <= maximum:
        raise ConfigError(
            f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}", name
        )


def _require_number(config, name, minimum, maximum):
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and minimum <= value <= maximum):
        bounds = f">= {minimum:g}" if maximum == math.inf else f"in [{minimum:g}, {maximum:g}]"
        raise ConfigError(f"{name} must be a finite number {bounds}, got {value!r}", name)


def _require_choice(config, name, choices):
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}", name)

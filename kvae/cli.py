"""The ``kvae`` command: parse the arguments, pick the backend, call ``kvae.train``.

    kvae train [--backend jax] [--epochs 10] [--out runs/NAME] ...
    kvae figures RUN_DIR [--backend torch] [--lang ko]
    kvae sweep --betas 0.5 1 4 [--epochs 5] [--out runs/NAME]

Keras reads ``KERAS_BACKEND`` once, when it is first imported, so this module
imports nothing from Keras or from kvae's Keras-using modules at import time:
``main`` parses the arguments, sets the variable, and only then imports
``kvae.train``. For the same reason the choices below are spelled out here
rather than imported; ``tests/test_cli.py`` checks that they match the package.
A bad argument ends with status 2 and one line on stderr, before Keras loads.
"""

import argparse
import dataclasses
import datetime
import math
import os
import pathlib
import sys

BACKENDS = ("tensorflow", "jax", "torch")  # kvae.backends.BACKENDS
KINDS = ("mlp", "conv")  # kvae.networks.KINDS
SOURCES = ("bundled", "keras")  # kvae.data.SOURCES
LANGS = ("en", "ko")
SWEEP_EPOCHS = 5  # a sweep trains one model per beta, so each is shorter than a single run
SWEEP_BETAS = (0.25, 1.0, 4.0, 16.0)  # from near an autoencoder to near posterior collapse
# The TrainConfig defaults, as --help shows them (tests/test_cli.py keeps the two equal).
SHOWN_DEFAULTS = {
    "latent_dim": 2,
    "kind": "mlp",
    "hidden": (512,),
    "beta": 1.0,
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "seed": 0,
    "source": "bundled",
    "iw_samples": 50,
    "iw_examples": 500,
}
EXIT_USAGE = 2  # argparse's status for a bad command line
EXIT_FAILED = 1  # the run started and could not finish (a NaN loss)


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``kvae train: error: ...`` and status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv=None):
    """Run the ``kvae`` command; returns the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command_parser
    if args.backend is not None:
        select_backend(args.backend, command, relaunch=argv is None)
    # TensorFlow's C++ start-up notes (CPU instruction sets) would bury the progress bar.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.handler(args, command)
    except FloatingPointError as error:  # raised by kvae's StopOnNaN: the message says why
        print(f"{command.prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{command.prog}: interrupted; no half-written file was left", file=sys.stderr)
        return 130


def build_parser():
    parser = Parser(prog="kvae", description="Train and inspect Variational Autoencoders.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a VAE and write a run folder")
    _add_training_options(train, epochs=None)
    train.add_argument("--out", type=pathlib.Path, help="run folder (default: runs/<time>-...)")
    _add_output_options(train)
    train.set_defaults(handler=run_train, command_parser=train)

    figures = commands.add_parser("figures", help="redraw a run's figures from its saved model")
    figures.add_argument("run_dir", type=pathlib.Path, metavar="RUN_DIR")
    figures.add_argument("--backend", choices=BACKENDS, help="overrides KERAS_BACKEND")
    figures.add_argument("--lang", choices=LANGS, default="en", help="figure labels")
    figures.set_defaults(handler=run_figures, command_parser=figures)

    sweep = commands.add_parser("sweep", help="train one short VAE per beta; table and figure")
    sweep.add_argument(
        "--betas",
        type=non_negative_float,
        nargs="+",
        default=list(SWEEP_BETAS),
        metavar="BETA",
        help=f"the KL weights to train with (default {' '.join(f'{b:g}' for b in SWEEP_BETAS)})",
    )
    _add_training_options(sweep, epochs=SWEEP_EPOCHS, beta=False)
    sweep.add_argument("--out", type=pathlib.Path, help="folder (default: runs/sweep-<time>-...)")
    _add_output_options(sweep)
    sweep.set_defaults(handler=run_sweep, command_parser=sweep)
    return parser


def _add_training_options(parser, epochs, beta=True):
    """The options that map onto ``TrainConfig``; an option left out keeps the config's default."""

    def add(flag, help, **kwargs):
        name = flag[2:].replace("-", "_")
        shown = kwargs.get("default") or SHOWN_DEFAULTS.get(name)
        if shown is not None:
            help += f" (default {' '.join(map(str, shown)) if isinstance(shown, tuple) else shown})"
        parser.add_argument(flag, help=help, **kwargs)

    add("--backend", "Keras backend; overrides KERAS_BACKEND", choices=BACKENDS)
    add("--latent-dim", "size of z; 2 can be drawn whole", type=positive_int)
    add("--kind", "encoder and decoder networks", choices=KINDS)
    add("--hidden", "hidden layer widths", type=positive_int, nargs="+")
    if beta:  # a sweep takes --betas instead
        add("--beta", "weight of the KL term; 1 trains on the ELBO", type=non_negative_float)
    add("--epochs", "passes over the training digits", type=positive_int, default=epochs)
    add("--batch-size", "digits per gradient step", type=positive_int)
    add("--learning-rate", "Adam's step size", type=positive_float)
    add("--seed", "seed for weights, noise and shuffling", type=non_negative_int)
    add("--source", "bundled: offline subset; keras: full MNIST download", choices=SOURCES)
    add("--train-size", "use only the first N training digits", type=positive_int)
    add("--iw-samples", "k, samples per digit for the log p(x) bound", type=positive_int)
    add("--iw-examples", "test digits for the log p(x) bound", type=positive_int)


def _add_output_options(parser):
    parser.add_argument("--force", action="store_true", help="replace an existing run folder")
    parser.add_argument("--lang", choices=LANGS, default="en", help="figure labels")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch, no bar")


# --- the commands: each imports kvae.train only now, after the backend is set ---------------


def run_train(args, command):
    config, out, verbose = _prepare_run(args, command, "run")  # refuses before Keras loads
    from kvae import train

    metrics = _run(command, train.train_and_evaluate, config, out, args.force, args.lang, verbose)
    print(summary(metrics, out))
    return 0


def run_figures(args, command):
    if not args.run_dir.is_dir():
        command.error(f"run folder {str(args.run_dir)!r} does not exist")
    from kvae import train

    paths = _run(command, train.redraw_figures, args.run_dir, args.lang)
    print(f"wrote {len(paths)} figures to {paths[0].parent}")
    return 0


def run_sweep(args, command):
    config, out, verbose = _prepare_run(args, command, "sweep")  # refuses before Keras loads
    from kvae import train

    rows = _run(command, train.sweep, args.betas, config, out, args.force, args.lang, verbose)
    print(train.markdown_table(rows))
    print(f"sweep folder: {out}")
    return 0


def _prepare_run(args, command, prefix):
    """What train and sweep share: refuse an existing folder, then config, folder, verbosity."""
    if args.out is not None:
        _refuse_existing(args.out, args.force, command)
    config = make_config(args, command)
    out = args.out or default_out(prefix, config)
    return config, out, 2 if args.quiet else 1


def make_config(args, command):
    """A ``TrainConfig`` from the options given; the rest keep the dataclass's defaults."""
    from kvae.train import ConfigError, TrainConfig

    given = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    try:
        return TrainConfig(**given)
    except ConfigError as error:
        command.error(str(error))


def _run(command, function, *arguments):
    """Call a ``kvae.train`` function, turning its ``ConfigError`` into a usage error."""
    from kvae.train import ConfigError

    try:
        return function(*arguments)
    except ConfigError as error:
        command.error(str(error))


def _refuse_existing(out, force, command):
    # Checked before any training, so a clash costs nothing. kvae.train checks again, with
    # --force too (it replaces only a folder kvae wrote), and once more before the rename.
    if out.exists() and not force:
        command.error(f"run folder {str(out)!r} already exists; use --force to replace it")


def default_out(prefix, config):
    """``runs/<prefix>-<YYYYmmdd-HHMMSS>-<backend>-<kind>-z<latent_dim>``."""
    import keras

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}-{stamp}-{keras.backend.backend()}-{config.kind}-z{config.latent_dim}"
    return pathlib.Path("runs") / name


def summary(metrics, out):
    """What a run measured, in nats per test example."""
    return (
        f"test ELBO {metrics['elbo']:.2f} nats"
        f" (reconstruction {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f})\n"
        f"log p(x) >= {metrics['iw_log_px']:.2f} nats: importance-weighted bound,"
        f" k={metrics['iw_samples']}, first {metrics['iw_examples']} test digits"
        f" (ELBO on those digits {metrics['iw_elbo']:.2f})\n"
        f"backend {metrics['backend']}, {metrics['wall_seconds']:.0f} s; run folder: {out}"
    )


# --- the backend ------------------------------------------------------------------------------


def select_backend(name, command, relaunch):
    """Make Keras run on ``name``: set ``KERAS_BACKEND`` before Keras is imported.

    If Keras is already loaded on another backend (a package that imports it
    eagerly, or a notebook), the variable can no longer take effect: from the
    command line the process starts again with it set; from Python it is an error.
    """
    keras = sys.modules.get("keras")
    if keras is None:
        os.environ["KERAS_BACKEND"] = name
        return
    if keras.backend.backend() == name:
        return
    if not relaunch:
        command.error(
            f"Keras is already running on {keras.backend.backend()!r} in this process; "
            f"--backend {name} needs a new one"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    arguments = [sys.executable, "-m", "kvae", *sys.argv[1:]]
    os.execve(sys.executable, arguments, {**os.environ, "KERAS_BACKEND": name})


# --- argument types: refused with a one-line message before anything is imported ------------


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative_float(text):
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _number(text, kind, accept, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value

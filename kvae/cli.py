"""The ``kvae`` command: parse the arguments, check everything, then call ``kvae.train``.

    kvae train [--backend jax] [--epochs 10] [--out runs/NAME] ...
    kvae train --conditional [...]          a ConditionalVAE, asked for chosen digits
    kvae figures RUN_DIR [--backend torch] [--lang ko]
    kvae sweep --betas 0.5 1 4 [--epochs 5] [--out runs/NAME]

Keras reads ``KERAS_BACKEND`` once, when it is first imported, so this module
imports only ``kvae.config`` and ``kvae.rundir`` (no Keras): ``main`` parses
the arguments, builds the ``TrainConfig`` (which owns every range), checks and
locks the output folder, sets the backend, and only then imports ``kvae.train``.

Exit status: 0 done; 1 the run started and could not finish (a NaN loss, or a
sweep with a failed beta); 2 a bad argument, folder or run folder, or a setting
that cannot work here (``keras.json``, ``--source keras`` offline), before any
training, with one line on stderr; 130 Ctrl-C (SIGINT); 143 SIGTERM. After 1,
130 or 143 no half-written folder is left under the name asked for. Printing
never costs a run: a closed or broken standard output (``kvae train | head -1``)
or one that cannot encode a path is noted in one line on stderr, and a finished
run is kept with status 0.
"""

import argparse
import dataclasses
import datetime
import errno
import json
import os
import pathlib
import signal
import sys
import threading

from kvae import rundir
from kvae.config import (
    BACKENDS,
    CONDITIONAL_DEFAULTS,
    KINDS,
    LANGS,
    SOURCES,
    ConfigError,
    TrainConfig,
    defaults,
    require_parallel_backend,
)

SWEEP_EPOCHS = 5  # a sweep trains one model per beta, so each is shorter than a single run
SWEEP_BETAS = (0.25, 1.0, 4.0, 16.0)  # from near an autoencoder to near posterior collapse
EXIT_FAILED = 1  # the run started and could not finish (a NaN loss)
EXIT_USAGE = 2  # argparse's status for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # 128 + SIGTERM: what timeout, docker stop and Slurm send
FORCE_HELP = (
    "replace an existing run folder, only one kvae wrote (it has kvae-run.json) and that "
    "holds nothing else: a folder with other files is refused, never deleted"
)


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (``kvae train: error: ...``, status 2).

    ``allow_abbrev=False``: ``--beta`` is not silently read as ``--betas``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def main(argv=None):
    """Run the ``kvae`` command; returns the exit status (0 on success)."""
    command = None
    # The stop signals raise from the first line on: a SIGTERM at any moment is status 143.
    with _StopSignalsRaise():
        try:
            args = build_parser().parse_args(argv)
            command = args.command_parser
            return _run(args, command)
        except KeyboardInterrupt:
            return _fail(command, "interrupted; no half-written folder was left", EXIT_INTERRUPTED)
        except rundir.Terminated:
            return _fail(command, "terminated; no half-written folder was left", EXIT_TERMINATED)


def _run(args, command):
    try:
        select_backend(args.backend)
        check_keras_json()
    except ConfigError as error:
        command.error(str(error))
    # TensorFlow's C++ start-up notes (CPU instruction sets) would bury the progress bar.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The command only writes figures to files: Agg needs no display, and an MPLBACKEND
    # naming no backend (or an interactive one) cannot fail a run after training.
    os.environ["MPLBACKEND"] = "Agg"
    with _SafeStdout() as stdout:
        try:
            status = args.handler(args, command)
            rundir.raise_if_stopped()  # a stop that library code swallowed
        except ConfigError as error:
            command.error(_option_message(error, command))
        except FloatingPointError as error:  # raised by kvae's StopOnNaN: the message says why
            return _fail(command, error, EXIT_FAILED)
        if stdout.lost is not None:
            _note(command, f"could not print to standard output ({stdout.lost}); {WRITTEN}")
        return status


WRITTEN = "what the command writes to its folder was written"


def _note(command, message):  # a remark that changes no status
    try:
        print(f"{command.prog}: note: {' '.join(str(message).split())}", file=sys.stderr)
    except (OSError, ValueError):  # stderr closed too: the status still says it
        pass


def _fail(command, message, status):
    prog = command.prog if command is not None else "kvae"
    try:
        print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    except (OSError, ValueError):  # stderr closed too: the status still says it
        pass
    return status


def _option_message(error, command):
    """A ``TrainConfig`` complaint, named by its option: ``argument --seed: seed must be ...``."""
    if error.field is None:
        return str(error)
    option = "--betas" if error.field == "beta" and command.prog.endswith("sweep") else None
    return f"argument {option or '--' + error.field.replace('_', '-')}: {error}"


class _StopSignalsRaise:
    """While inside, SIGINT and SIGTERM raise in the main thread, on every delivery.

    The handler (``kvae.rundir.request_stop``) also remembers the signal, because
    library code can swallow the exception (a KeyboardInterrupt raised inside a
    garbage-collection callback is only printed): training checks the flag after
    every batch and ``rundir`` before renaming a folder into place, so the
    command still stops with the signal's status. The handler stays installed:
    a second signal raises again (during a clean-up, once the clean-up is done).
    A SIGINT that is already ignored (``nohup``, background jobs) stays ignored.
    """

    def __enter__(self):
        self.previous = {}
        rundir.clear_stop()
        if threading.current_thread() is not threading.main_thread():
            return self
        self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, rundir.request_stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, rundir.request_stop)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class _SafeStdout:
    """``sys.stdout`` for the command's run: a failed print never ends a run.

    A broken pipe (``kvae train | head -1``) or a closed descriptor sends the rest
    to ``os.devnull`` (the exit flush then succeeds too) and is remembered in
    ``lost``; text the stream cannot encode (``PYTHONIOENCODING=ascii`` and a
    Korean path) is written with backslash escapes. With no stdout at all
    (``kvae train >&-``), output goes to ``os.devnull``.
    """

    def __enter__(self):
        self.original = sys.stdout
        self.lost = None
        self.stream = sys.stdout
        if sys.stdout is None:
            self.stream = open(os.devnull, "w")  # noqa: SIM115 (closed on exit)
            self.lost = "it is closed"
        sys.stdout = self
        return self

    def __exit__(self, *exc):
        sys.stdout = self.original
        if self.original is None:
            self.stream.close()

    def write(self, text):
        if self.lost is None:
            try:
                self._write(text)
            except (OSError, ValueError) as error:  # ValueError: a closed file object
                self._lose(error)
        return len(text)

    def _write(self, text):
        try:
            self.stream.write(text)
        except UnicodeEncodeError:
            encoding = self.stream.encoding or "ascii"
            self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def flush(self):
        if self.lost is not None:
            return
        try:
            self.stream.flush()
        except (OSError, ValueError) as error:
            self._lose(error)

    def _lose(self, error):
        """Point the descriptor at os.devnull, so later writes and the exit flush succeed."""
        if self.lost is None:
            broken = getattr(error, "errno", None) == errno.EPIPE
            self.lost = "broken pipe" if broken else str(error) or type(error).__name__
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no descriptor to redirect: nothing more to flush
            pass

    def __getattr__(self, name):  # isatty, fileno, encoding: Keras's progress bar asks
        return getattr(self.stream, name)


def build_parser():
    parser = Parser(prog="kvae", description="Train and inspect Variational Autoencoders.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a VAE and write a run folder")
    _add_training_options(train, epochs=None, conditional=True)
    train.add_argument(
        "--conditional",
        action="store_true",
        help="train a conditional VAE on digits and their labels, then ask it for chosen digits",
    )
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
        type=float,
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


def _add_training_options(parser, epochs, beta=True, conditional=False):
    """The options that map onto ``TrainConfig``; an option left out keeps the config's default.

    argparse only parses the type; ``TrainConfig`` checks the range, so a value is
    refused with the same message here and in a notebook.
    """
    shown_defaults = defaults()

    def add(flag, help, **kwargs):
        name = flag[2:].replace("-", "_")
        shown = kwargs.get("default") or shown_defaults.get(name)
        if shown is not None:
            shown = " ".join(map(str, shown)) if isinstance(shown, tuple) else shown
            # The defaults a conditional run changes (kvae.config says why).
            own = CONDITIONAL_DEFAULTS.get(name) if conditional else None
            help += f" (default {shown}{'' if own is None else f'; {own} with --conditional'})"
        parser.add_argument(flag, help=help, **kwargs)

    add("--backend", "Keras backend; overrides KERAS_BACKEND", choices=BACKENDS)
    add("--latent-dim", "size of z; 2 can be drawn whole", type=int)
    add("--kind", "encoder and decoder networks", choices=KINDS)
    add("--hidden", "hidden layer widths", type=int, nargs="+")
    if beta:  # a sweep takes --betas instead
        add("--beta", "weight of the KL term; 1 trains on the ELBO", type=float)
    add("--epochs", "passes over the training digits", type=int, default=epochs)
    add("--batch-size", "digits per gradient step", type=int)
    add("--learning-rate", "Adam's step size", type=float)
    add("--seed", "seed for weights, noise and shuffling, < 2**32", type=int)
    add("--source", "bundled: offline subset; keras: full MNIST download", choices=SOURCES)
    add("--train-size", "use only the first N training digits", type=int)
    add("--iw-samples", "k, samples per digit for the log p(x) bound", type=int)
    add("--iw-examples", "test digits for the log p(x) bound", type=int)
    add("--mixture-components", "Gaussian mixture fitted to the training codes", type=int)
    add("--judge-samples", "samples per sampler that the judge reads", type=int)
    add("--map-epochs", "epochs of the 2-D companion model for the figures; 0: none", type=int)
    add("--devices", "devices that share each batch (JAX only); 1: no distribution", type=int)


def _add_output_options(parser):
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.add_argument("--lang", choices=LANGS, default="en", help="figure labels")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch, no bar")


# --- the commands: each checks and locks its folder, then imports kvae.train -----------------


def run_train(args, command):
    config = make_config(args)
    out = args.out or default_out("cvae" if config.conditional else "run", config)
    with rundir.reserve(out, args.force) as out:  # checked and locked before Keras loads
        from kvae import train

        metrics = train.train_and_evaluate(config, out, args.force, args.lang, _verbose(args))
    print(summary(metrics, out))
    return 0


def run_figures(args, command):
    with rundir.lock_existing(args.run_dir) as run_dir:
        rundir.read_run(run_dir)  # a damaged run folder is named before Keras loads
        from kvae import train

        paths = train.redraw_figures(run_dir, args.lang)
    print(f"wrote {len(paths)} figures to {paths[0].parent}")
    return 0


def run_sweep(args, command):
    config = make_config(args)
    for beta in args.betas:
        dataclasses.replace(config, beta=beta)  # TrainConfig checks each beta
    out = args.out or default_out("sweep", config)
    with rundir.reserve(out, args.force) as out:
        from kvae import train

        rows = train.sweep(args.betas, config, out, args.force, args.lang, _verbose(args))
    print(train.markdown_table(rows))
    print(f"sweep folder: {out}")
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        first = failed[0]
        message = f"{len(failed)} of {len(rows)} betas failed (the table marks them);"
        return _fail(command, f"{message} beta {first['beta']:g}: {first['error']}", EXIT_FAILED)
    return 0


def make_config(args):
    """A ``TrainConfig`` from the options given; the rest keep the dataclass's defaults.

    ``--devices`` is also checked against the backend chosen, before Keras loads.
    """
    given = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = tuple(value) if isinstance(value, list) else value
    config = TrainConfig(**given)
    require_parallel_backend(config.devices, os.environ["KERAS_BACKEND"])
    return config


def _verbose(args):
    return 2 if args.quiet else 1


def default_out(prefix, config):
    """``runs/<prefix>-<YYYYmmdd-HHMMSS>-<backend>-<kind>-z<latent_dim>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}-{stamp}-{os.environ['KERAS_BACKEND']}-{config.kind}-z{config.latent_dim}"
    return pathlib.Path("runs") / name


def summary(metrics, out):
    """What a run measured: nats per test example, then what the judge reads in its images."""
    return (
        f"test ELBO {metrics['elbo']:.2f} nats"
        f" (reconstruction {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f})\n"
        f"{'log p(x|y)' if 'conditional_sampler' in metrics else 'log p(x)'}"
        f" >= {metrics['iw_log_px']:.2f} nats: importance-weighted bound,"
        f" k={metrics['iw_samples']}, first {metrics['iw_examples']} test digits"
        f" (ELBO on those digits {metrics['iw_elbo']:.2f})\n"
        f"{judge_summary(metrics)}\n"
        f"backend {metrics['backend']}{_on_devices(metrics)}, {metrics['wall_seconds']:.0f} s;"
        f" run folder: {out}"
    )


def _on_devices(metrics):
    devices = metrics["devices"]
    return f" on {devices} devices" if devices > 1 else ""


JUDGE_ROWS = (
    ("prior", "samples from N(0, I)"),
    ("mixture", "samples from a {mixture_components}-component Gaussian mixture"),
    ("aggregate", "samples from the aggregate posterior"),
    ("reference", "real test digits (reference)"),
)


def judge_summary(metrics):
    """The judge's lines: right-digit reconstructions, then one line per sampler."""
    if "conditional_sampler" in metrics:
        return conditional_judge_summary(metrics)
    lines = [
        f"judge: {metrics['reconstruction_accuracy']:.1%} of test reconstructions are the "
        f"right digit; {metrics['judge_samples']} samples per sampler:"
    ]
    for name, label in JUDGE_ROWS:
        label = label.format(**metrics)
        lines.append(
            f"  {label:<50} confident {metrics[name + '_confident']:.1%},"
            f" score {metrics[name + '_score']:.2f}, rarest digit {metrics[name + '_rarest']:.1%}"
        )
    return "\n".join(lines)


CONDITIONAL_JUDGE_ROWS = (
    ("prior", "samples from N(0, I)"),
    ("aggregate", "samples from the aggregate posterior"),
    ("per_class", "samples from the asked digit's aggregate posterior"),
)


def conditional_judge_summary(metrics):
    """A conditional run's judge lines: how often each sampler's images are the digit asked for."""
    lines = [
        f"judge: {metrics['reconstruction_accuracy']:.1%} of test reconstructions (given their "
        f"labels) are the right digit; {metrics['judge_samples']} samples per sampler, "
        "asked for each digit in turn:"
    ]
    for name, label in CONDITIONAL_JUDGE_ROWS:
        per_digit = metrics[f"{name}_as_asked_per_digit"]
        worst = min(range(len(per_digit)), key=lambda d: per_digit[d])
        lines.append(
            f"  {label:<52} as asked {metrics[name + '_as_asked']:.1%},"
            f" worst digit {worst} {metrics[name + '_as_asked_worst']:.1%},"
            f" confident and as asked {metrics[name + '_confident_as_asked']:.1%}"
        )
    run_s = dict(CONDITIONAL_JUDGE_ROWS)[metrics["conditional_sampler"]]
    lines.append(f"  the run's sampler (kvae.config.CONDITIONAL_SAMPLER): {run_s}")
    return "\n".join(lines)


# --- the backend ------------------------------------------------------------------------------


def select_backend(name=None):
    """Make Keras run on ``name`` (else ``KERAS_BACKEND``, else keras.json, else tensorflow).

    Sets ``KERAS_BACKEND`` before Keras is imported. If Keras is already loaded
    on another backend (a notebook, a package that imports it eagerly), the
    variable can no longer take effect, and that is an error.

    Raises:
        ConfigError: the backend is not one kvae runs on, or Keras runs on another.
    """
    source = "--backend"
    if name is None:
        name, source = os.environ.get("KERAS_BACKEND"), "KERAS_BACKEND"
    if name is None:
        name, source = _keras_json_backend(), "keras.json"
    if name not in BACKENDS:
        raise ConfigError(
            f"{source}={name!r} is not a backend kvae runs on; expected one of {BACKENDS}"
        )
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != name:
        raise ConfigError(
            f"Keras is already running on {keras.backend.backend()!r} in this process; "
            f"backend {name!r} needs a new one"
        )
    os.environ["KERAS_BACKEND"] = name
    return name


def _keras_json_path():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~") or "/tmp", ".keras")
    return pathlib.Path(home, "keras.json")


def _keras_json():
    """``$KERAS_HOME/keras.json`` as a dict ({} when missing or unreadable, as Keras reads it)."""
    try:
        settings = json.loads(_keras_json_path().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _keras_json_backend():
    """The backend Keras would read from ``$KERAS_HOME/keras.json`` (default tensorflow)."""
    return _keras_json().get("backend", "tensorflow")


# What kvae's networks and losses are written for; keras.json can set other values.
KERAS_SETTINGS = {"floatx": "float32", "image_data_format": "channels_last"}


def check_keras_json():
    """Refuse ``keras.json`` settings kvae's networks do not run with, before Keras loads.

    kvae builds channels-last float32 networks (images (N, 28, 28, 1), a
    float32 ELBO); ``floatx: float16`` or ``channels_first`` would fail deep
    inside Keras, after the data loaded. Nothing to check once Keras is loaded
    (a notebook): its settings are already in force.

    Raises:
        ConfigError: the setting, its value and the fix.
    """
    if "keras" in sys.modules:
        return
    settings = _keras_json()
    for key, expected in KERAS_SETTINGS.items():
        value = settings.get(key, expected)
        if value != expected:
            raise ConfigError(
                f"{str(_keras_json_path())!r} sets {key}={value!r}; kvae's networks need "
                f"{key}={expected!r}: change it there, or point KERAS_HOME at another folder"
            )

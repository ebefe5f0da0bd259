"""Training throughput, peak memory and test ELBO: kvae's ``VAE.fit`` against hand-written loops.

Every contender trains the same VAE on the same data with the same optimiser:

- data: ``kvae.load_mnist()``, the bundled 8,000 train / 2,000 test digits (grey levels);
- network: MLP 784-400-20-400-784 (ReLU), Bernoulli likelihood on logits;
- loss: reconstruction summed over pixels + closed-form KL, one sample of z, mean over the batch;
- Adam, learning rate 1e-3, batch 128, every example seen once per epoch (the last batch is short).

The contenders, one subprocess each (one process is one Keras backend):

- ``kvae-jax``, ``kvae-tensorflow``, ``kvae-torch``: ``kvae.VAE.fit`` under each backend, as
  compiled by default; ``kvae-tensorflow-xla``: the same with ``compile(jit_compile=True)``;
- the floors, the fastest way each framework trains this model, which kvae is measured against:
  ``jax-scan``, a hand-written epoch fused into one ``jax.lax.scan`` (one dispatch per epoch);
  ``tf-xla``, a hand-written ``tf.function(jit_compile=True)`` step fed one batch shape (the short
  last batch padded with real examples and masked out of the loss, so XLA compiles once);
  ``torch-compile``, the PyTorch loop below with ``torch.compile(model)``;
- for reference, what many readers would write: ``jax-jit``, a hand-written ``jax.jit`` step, one
  dispatch per batch; ``tf-function``, a ``tf.function`` step without XLA; ``torch-loop``, a plain
  PyTorch loop in the style of pytorch/examples ``vae/main.py`` (``nn.Module``,
  ``torch.optim.Adam``, ``DataLoader``, ``binary_cross_entropy_with_logits``).

The hand-written JAX and TensorFlow loops write Adam out (Kingma & Ba, Keras's epsilon) on plain
arrays or ``tf.Variable`` s and start from Keras's default initialisation.

Measured per run: seconds of the first epoch (compilation and warm-up), steady-state examples per
second over the remaining epochs, the process's peak resident memory (``ru_maxrss`` from
``resource.getrusage``, so it includes the framework itself), and the test-set negative ELBO after
the last epoch (one sample of z per test digit).

Seed policy: repeat ``r`` uses the seed ``seed + r`` for everything a contender draws at random
(weights, shuffling, the noise of training and of the test estimate), through that framework's own
generators. Frameworks draw different streams from equal seeds, so runs differ by sampling noise.

The contenders live in one module each per framework, every one readable alone:
``throughput_kvae.py`` (kvae under the process's backend), ``throughput_jax.py``,
``throughput_tensorflow.py``, ``throughput_torch.py``, and ``throughput_common.py`` (the sizes,
first weights and Adam constants they share). This file is the driver: it runs each contender in a
subprocess, times its epochs, summarises the repeats and writes ``results.md``.

Usage::

    python benchmarks/train_throughput.py                      # 5 epochs, 3 repeats: ~10 min on CPU
    python benchmarks/train_throughput.py --epochs 20 --repeats 3 --output results_gpu.md
    python benchmarks/train_throughput.py --contenders kvae-jax jax-scan --no-write
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import throughput_jax
import throughput_kvae
import throughput_tensorflow
import throughput_torch
from throughput_common import peak_rss_mb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

RESULT_TAG = "RESULT "  # the worker's one line of JSON on stdout starts with this

# contender name -> (KERAS_BACKEND for its process, or None when it imports no Keras)
CONTENDERS = {
    "kvae-jax": "jax",
    "kvae-tensorflow": "tensorflow",
    "kvae-torch": "torch",
    "kvae-tensorflow-xla": "tensorflow",
    "jax-scan": None,
    "tf-xla": None,
    "torch-compile": None,
    "jax-jit": None,
    "tf-function": None,
    "torch-loop": None,
}
# kvae contender -> its floor: the fastest way that framework trains this model
FLOORS = {
    "kvae-jax": "jax-scan",
    "kvae-tensorflow": "tf-xla",
    "kvae-tensorflow-xla": "tf-xla",
    "kvae-torch": "torch-compile",
}
# The targets hold for these; Keras's PyTorch trainer runs eagerly, one step per call, and
# kvae-torch's ratios to its floor are printed for reference only.
TARGETED = ("kvae-jax", "kvae-tensorflow", "kvae-tensorflow-xla")
LIBRARIES = ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "torch", "numpy")


# ---------------------------------------------------------------- the workers


# hand-written contender -> (its framework, the function that sets up its loop)
HAND_WRITTEN = {
    "jax-jit": ("jax", throughput_jax.make_jax_jit),
    "tf-function": ("tensorflow", throughput_tensorflow.make_tf_function),
    "torch-loop": ("torch", throughput_torch.make_torch_loop),
    "jax-scan": ("jax", throughput_jax.make_jax_scan),
    "tf-xla": ("tensorflow", throughput_tensorflow.make_tf_xla),
    "torch-compile": ("torch", throughput_torch.make_torch_compile),
}


def load_data(path):
    with np.load(path) as arrays:
        return arrays["x_train"], arrays["x_test"]


def run_hand_written(name, x_train, x_test, args):
    backend, make = HAND_WRITTEN[name]
    train_epoch, test_negative_elbo = make(x_train, args)
    seconds, cpu_seconds = [], []
    for _ in range(args.epochs):
        start = (time.perf_counter(), time.process_time())
        train_epoch()
        seconds.append(time.perf_counter() - start[0])
        cpu_seconds.append(time.process_time() - start[1])
    return seconds, cpu_seconds, test_negative_elbo(x_test), backend


def device_of(backend):
    """``"cpu"`` or the accelerator the framework will compute on."""
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def worker(args):
    """Train one contender in this process and print its measurements as one JSON line."""
    x_train, x_test = load_data(args.data)
    if args.worker in HAND_WRITTEN:
        measured = run_hand_written(args.worker, x_train, x_test, args)
    else:
        measured = throughput_kvae.run_kvae(x_train, x_test, args)
    seconds, cpu_seconds, test_negative_elbo, backend = measured
    steady = seconds[1:]
    result = {
        "contender": args.worker,
        "seed": args.seed,
        "device": device_of(backend),
        "epoch_seconds": seconds,
        "first_epoch_s": seconds[0],
        "examples_per_s": len(x_train) * len(steady) / sum(steady),
        # CPU time of all the process's threads: less sensitive to other load on the machine
        "cpu_ms_per_example": 1000 * sum(cpu_seconds[1:]) / (len(x_train) * len(steady)),
        "peak_rss_mib": peak_rss_mb(),
        "test_negative_elbo": test_negative_elbo,
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


def prepare(path):
    """Write the bundled train/test images once, so every contender reads identical arrays."""
    import kvae

    x_train, _ = kvae.load_mnist("train")
    x_test, _ = kvae.load_mnist("test")
    np.savez(path, x_train=x_train, x_test=x_test)


# ---------------------------------------------------------------- the driver


def run_subprocess(argv, backend):
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def run_contender(name, seed, data, args):
    argv = [
        "--worker", name, "--data", str(data), "--seed", str(seed),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate),
    ]  # fmt: skip
    done = run_subprocess(argv, CONTENDERS[name])
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"contender {name} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def run_all(args):
    """Every contender once per repeat; odd repeats run them in reverse order."""
    results = {name: [] for name in args.contenders}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "mnist.npz"
        done = run_subprocess(["--prepare", str(data)], os.environ.get("KERAS_BACKEND", "jax"))
        if done.returncode != 0:
            raise RuntimeError(f"could not load the bundled MNIST:\n{done.stderr[-2000:]}")
        for repeat in range(args.repeats):
            order = args.contenders if repeat % 2 == 0 else args.contenders[::-1]
            for name in order:
                result = run_contender(name, args.seed + repeat, data, args)
                results[name].append(result)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name:16s} "
                    f"first epoch {result['first_epoch_s']:6.2f} s, "
                    f"{result['examples_per_s']:8.0f} examples/s, "
                    f"peak RSS {result['peak_rss_mib']:6.0f} MiB, "
                    f"test -ELBO {result['test_negative_elbo']:7.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def summarise(runs):
    """Medians over repeats (peak memory: the largest), with the extremes beside them.

    The median, not the mean: one repeat slowed by other work on a shared machine
    moves a mean of three a lot and a median little.
    """
    speeds = [r["examples_per_s"] for r in runs]
    elbos = [r["test_negative_elbo"] for r in runs]
    return {
        "device": runs[0]["device"],
        "first_epoch_s": float(np.median([r["first_epoch_s"] for r in runs])),
        "examples_per_s": float(np.median(speeds)),
        "examples_per_s_range": (min(speeds), max(speeds)),
        "cpu_ms_per_example": float(np.median([r["cpu_ms_per_example"] for r in runs])),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "test_negative_elbo": float(np.median(elbos)),
        "test_negative_elbo_range": (min(elbos), max(elbos)),
    }


DESCRIPTIONS = {
    "kvae-jax": "`kvae.VAE.fit`, JAX backend",
    "kvae-tensorflow": "`kvae.VAE.fit`, TensorFlow backend",
    "kvae-torch": "`kvae.VAE.fit`, PyTorch backend",
    "kvae-tensorflow-xla": "`kvae.VAE.fit`, TensorFlow backend, `compile(jit_compile=True)`",
    "jax-scan": "floor: hand-written epoch fused into one `jax.lax.scan`",
    "tf-xla": "floor: hand-written `tf.function(jit_compile=True)` step, one batch shape",
    "torch-compile": "floor: the PyTorch loop with `torch.compile`",
    "jax-jit": "hand-written `jax.jit` step, one dispatch per batch",
    "tf-function": "hand-written `tf.function` step, no XLA",
    "torch-loop": "plain PyTorch loop (pytorch/examples style)",
}


def results_table(summary):
    rows = [
        "| contender | what | device | first epoch (s) | steady examples/s (min-max) "
        "| steady CPU ms/example | peak RSS (MiB) | test -ELBO (nats, min-max) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        low, high = s["examples_per_s_range"]
        elbo_low, elbo_high = s["test_negative_elbo_range"]
        rows.append(
            f"| {name} | {DESCRIPTIONS[name]} | {s['device']} | {s['first_epoch_s']:.2f} "
            f"| {s['examples_per_s']:,.0f} ({low:,.0f}-{high:,.0f}) "
            f"| {s['cpu_ms_per_example']:.3f} | {s['peak_rss_mib']:,.0f} "
            f"| {s['test_negative_elbo']:.2f} ({elbo_low:.2f}-{elbo_high:.2f}) |"
        )
    return "\n".join(rows)


def targets(summary):
    """The targets as (description, value, ratio by CPU time, holds) rows, for what was run.

    Against each floor: steady throughput at least 0.9 of it, a first epoch (tracing and
    compilation) at most 1.5 times its, a test -ELBO within 1 nat of its. Whether a
    throughput target holds is decided on wall-clock speed; the ratio of CPU time per example
    is printed beside it because it moves less when other work shares the machine.
    """
    rows = []

    def speed(name):
        return summary[name]["examples_per_s"]

    def cpu_ratio(name, other):
        ratio = summary[other]["cpu_ms_per_example"] / summary[name]["cpu_ms_per_example"]
        return f"{ratio:.2f}"

    for name, floor in FLOORS.items():
        if name not in summary or floor not in summary:
            continue
        targeted = name in TARGETED

        def holds(value, targeted=targeted):
            return value if targeted else None  # None: printed for reference

        ratio = speed(name) / speed(floor)
        rows.append((f"{name} / {floor} throughput >= 0.9", f"{ratio:.2f}",
                     cpu_ratio(name, floor), holds(ratio >= 0.9)))  # fmt: skip
        first = summary[name]["first_epoch_s"] / summary[floor]["first_epoch_s"]
        rows.append((f"{name} / {floor} first epoch <= 1.5", f"{first:.2f}", "",
                     holds(first <= 1.5)))  # fmt: skip
        gap = summary[name]["test_negative_elbo"] - summary[floor]["test_negative_elbo"]
        rows.append((f"{name} test -ELBO - {floor}'s, within 1 nat", f"{gap:+.2f}", "",
                     holds(abs(gap) <= 1.0)))  # fmt: skip
    kvae_names = [n for n in summary if n.startswith("kvae-")]
    if kvae_names and "torch-loop" in summary:
        fastest = max(kvae_names, key=speed)
        ratio = speed(fastest) / speed("torch-loop")
        rows.append((f"fastest kvae ({fastest}) / torch-loop throughput > 1", f"{ratio:.2f}",
                     cpu_ratio(fastest, "torch-loop"), ratio > 1.0))  # fmt: skip
    return rows


def targets_table(rows):
    lines = ["| target | value | same ratio by CPU time | holds |", "|---|---:|---:|---|"]
    for what, value, cpu, holds in rows:
        verdict = "reference" if holds is None else "yes" if holds else "**no**"
        lines.append(f"| {what} | {value} | {cpu} | {verdict} |")
    return "\n".join(lines)


def machine_description():
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    gpu = "no GPU"
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        gpu = names.replace("\n", ", ") or gpu
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{os.cpu_count()} CPU cores ({model}){memory}, {gpu}; {platform.platform()}"


def library_versions():
    versions = [f"python {platform.python_version()}"]
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(versions)


def load_average():
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def report(summary, args, command, loads):
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Training throughput: kvae against hand-written loops

Written by `benchmarks/train_throughput.py` (see `benchmarks/README.md`).

- Date: {date}
- Machine: {machine_description()}
- Libraries: {library_versions()}
- Load average (1 / 5 / 15 min) before and after: {loads[0]}; {loads[1]}
- Command: `{command}`
- Settings: {args.epochs} epochs, {args.repeats} repeats, batch {args.batch_size}, Adam
  {args.learning_rate:g}, seed {args.seed} + repeat; bundled MNIST, 8,000 train / 2,000 test
  digits (grey levels); MLP 784-400-20-400-784, Bernoulli logits.

{results_table(summary)}

Steady examples/s counts epochs 2 to {args.epochs} (the first epoch, which compiles, is the
"first epoch" column); the number is the median over repeats, the range their extremes. Steady
CPU ms/example is the process's CPU time (all threads) over the same epochs. Peak RSS is
the subprocess's `ru_maxrss` (`resource.getrusage`), largest over repeats: it includes the framework
itself, not only the model. Test -ELBO is the single-sample negative ELBO on the 2,000 test digits
after the last epoch (nats per digit), median over repeats; repeat `r` seeds weights, shuffling and
noise with `seed + r` through each framework's own generators.

## Targets

{targets_table(targets(summary))}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (>= 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every contender")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="repeat r uses seed + r")
    parser.add_argument(
        "--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS)
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "results.md", help="markdown file to write"
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--worker", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2 (the first is warm-up), got {args.epochs}")
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.prepare)
    if args.worker:
        return worker(args)
    command = shlex.join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]])
    started = time.perf_counter()
    before = load_average()
    runs = run_all(args)
    if not args.no_write:  # every run's raw numbers, kept before anything else can fail
        args.output.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    summary = {name: summarise(runs) for name, runs in runs.items()}
    text = report(summary, args, command, (before, load_average()))
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(
            f"wrote {args.output} ({time.perf_counter() - started:.0f} s in all)", file=sys.stderr
        )


if __name__ == "__main__":
    main()

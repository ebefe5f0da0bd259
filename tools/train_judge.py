"""Train the judge of ``kvae.judge`` and write ``assets/judge.npz`` + ``assets/judge.json``.

The judge is a small conv net trained on the bundled training split only
(``kvae.load_mnist("train")``, 8,000 digits), each epoch on copies shifted by
up to two pixels (drawn with NumPy from the seed, so the data stream is the
same on every backend). The test split is read once, at the end, to report
the accuracy: it chooses nothing (no early stopping, fixed epochs).

The architecture is ``kvae.judge.build_keras_model``. The weights are saved
as plain float32 arrays, and ``kvae.judge`` runs the forward pass in NumPy;
before writing, this script checks that NumPy's probabilities match Keras's
own ``predict`` to 1e-4.

Usage::

    KERAS_BACKEND=jax python tools/train_judge.py            # writes assets/judge.*
    KERAS_BACKEND=jax python tools/train_judge.py --out /tmp  # somewhere else
"""

import argparse
import json
import pathlib
import platform
import time

import keras
import numpy as np

import kvae
from kvae import judge

SEED = 20260
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
MAX_SHIFT = 2  # pixels, each axis
ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"


def shifted(x, rng):
    """Each image moved by its own (dy, dx) in [-MAX_SHIFT, MAX_SHIFT], zeros shifted in."""
    padded = np.pad(x, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)))
    dy, dx = rng.integers(0, 2 * MAX_SHIFT + 1, size=(2, len(x)))
    rows = dy[:, None] + np.arange(28)[None, :]
    cols = dx[:, None] + np.arange(28)[None, :]
    return padded[np.arange(len(x))[:, None, None], rows[:, :, None], cols[:, None, :]]


def train(seed=SEED, epochs=EPOCHS):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = kvae.load_mnist("train")
    model = judge.build_keras_model()
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    for epoch in range(epochs):
        # NumPy shuffles and shifts, so the data stream is the same on every backend
        order = rng.permutation(len(x))
        logs = model.fit(
            shifted(x[order], rng),
            y[order],
            batch_size=BATCH_SIZE,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        print(
            f"epoch {epoch + 1}/{epochs}: "
            + ", ".join(f"{k} {v[-1]:.4f}" for k, v in logs.history.items())
        )
    return model


def arrays_of(model):
    return {
        f"{name}_{part}": np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)
        for name in judge.LAYERS
        for part, v in zip(("kernel", "bias"), model.get_layer(name).weights, strict=True)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ASSETS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    start = time.perf_counter()
    model = train(epochs=args.epochs)
    seconds = time.perf_counter() - start
    params = arrays_of(model)

    x_test, y_test = kvae.load_mnist("test")
    keras_p = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x_test, verbose=0)))
    numpy_p = judge.predict_proba(x_test, params)
    gap = float(np.abs(keras_p - numpy_p).max())
    if gap > 1e-4:
        raise SystemExit(f"NumPy's forward pass disagrees with Keras's by {gap:g}")
    test_accuracy = float(np.mean(numpy_p.argmax(axis=1) == y_test))
    reference = judge.score_proba(numpy_p)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / judge.ASSET_NAME, **params)
    provenance = {
        "script": "tools/train_judge.py",
        "seed": SEED,
        "data": "kvae.load_mnist('train'): the bundled training split, 8,000 digits",
        "augmentation": f"each epoch, every image shifted by up to {MAX_SHIFT} px per axis",
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam({LEARNING_RATE})",
        "parameters": int(sum(v.size for v in params.values())),
        "test_accuracy": round(test_accuracy, 4),
        "reference_score_on_test": {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in reference.as_dict().items()
            if k != "class_shares"
        },
        "numpy_vs_keras_max_abs_gap": gap,
        "train_seconds": round(seconds, 1),
        "backend": keras.backend.backend(),
        "versions": {
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            keras.backend.backend(): _backend_version(),
        },
    }
    (args.out / "judge.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


def _backend_version():
    name = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name]
    return __import__(module).__version__


if __name__ == "__main__":
    main()

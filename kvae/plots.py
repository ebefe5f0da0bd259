"""The figures the chapters and the command line share.

Every function takes ``lang="en" | "ko"`` for its labels and returns the
matplotlib ``Figure`` it drew on (the one holding ``ax`` when ``ax`` is given),
so a caller can ``fig.savefig(...)`` or let Jupyter show it. The first Korean
figure registers a font with Hangul (NanumGothic, shipped by
``koreanize-matplotlib``) so Korean labels render instead of empty boxes;
importing this module changes no matplotlib setting. Code that draws Korean
text with matplotlib directly calls ``use_hangul_font()`` first.
"""

import importlib.util
import pathlib

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager
from matplotlib.collections import EllipseCollection
from matplotlib.ticker import MaxNLocator

from kvae.config import LANGS

HANGUL_FONT = "NanumGothic"


def _array(values):
    """NumPy values of an array or a backend tensor; a PyTorch tensor may still track gradients
    (``vae.decode`` under PyTorch), and NumPy refuses to read one that does."""
    if hasattr(values, "detach"):  # torch.Tensor
        values = values.detach().cpu()
    return np.asarray(values)


def use_hangul_font():
    """Make NanumGothic (shipped by koreanize-matplotlib) matplotlib's first font.

    The font file is registered directly rather than by importing
    ``koreanize_matplotlib``, whose import needs ``distutils`` (gone from
    Python 3.12). DejaVu Sans stays behind it for glyphs NanumGothic lacks. One
    gap remains: mathtext draws text in the first font only, so the minus sign
    of log-axis ticks (``10^{-1}``) is missing; format such ticks with
    ``matplotlib.ticker.FormatStrFormatter("%g")``.
    """
    global _hangul_registered
    spec = importlib.util.find_spec("koreanize_matplotlib")
    fonts = pathlib.Path(spec.submodule_search_locations[0]) / "fonts"
    font_manager.fontManager.addfont(str(fonts / f"{HANGUL_FONT}.ttf"))
    plt.rcParams["font.family"] = [HANGUL_FONT, "DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    _hangul_registered = True


_hangul_registered = False
LABELS = {
    "en": {
        "z1": "$z_1$",
        "z2": "$z_2$",
        "active": "the two most active of {d} dimensions",
        "digit": "digit",
        "epoch": "epoch",
        "nats": "nats per image",
        "original": "original",
        "reconstruction": "reconstruction",
        "beta": r"$\beta$",
        "reconstruction_loss": "reconstruction (distortion)",
        "kl_loss": "KL (rate)",
        "rate": "rate: KL (nats)",
        "distortion": "distortion: reconstruction (nats)",
        "sigma": r"mean encoder $\sigma$",
        "prior_sigma": r"prior $\sigma = 1$",
        "loss": "loss",
        "val": "test",
        "latent": "latent space",
        "grid": "decoded latent grid",
        "interp": "interpolation",
        "prior": r"samples from $\mathcal{N}(0, I)$",
        "mixture": "samples from a Gaussian mixture\nfitted to the training codes",
        "map": "2-D companion model",
        "tradeoff": "reconstruction and KL against beta",
        "rd_curve": "rate-distortion curve",
        "asked": "digit asked for",
        "style": "style: one code per row",
        "digit_styles": r"every digit in the styles of codes from $\mathcal{N}(0, I)$",
        "same_style": "same style, every digit: each test digit's code, decoded as each digit",
        "test_digit": "test digit",
    },
    "ko": {
        "z1": "$z_1$",
        "z2": "$z_2$",
        "active": "{d}개 차원 중 가장 활발한 두 차원",
        "digit": "숫자",
        "epoch": "에폭",
        "nats": "이미지 한 장당 nat",
        "original": "원본",
        "reconstruction": "재구성",
        "beta": r"$\beta$",
        "reconstruction_loss": "재구성 오차 (왜곡)",
        "kl_loss": "KL (레이트)",
        "rate": "레이트: KL (nat)",
        "distortion": "왜곡: 재구성 오차 (nat)",
        "sigma": r"인코더 $\sigma$ 평균",
        "prior_sigma": r"사전 분포 $\sigma = 1$",
        "loss": "손실",
        "val": "테스트",
        "latent": "잠재 공간",
        "grid": "잠재 공간 격자 디코딩",
        "interp": "보간",
        "prior": r"$\mathcal{N}(0, I)$에서 뽑은 샘플",
        "mixture": "학습 데이터의 코드에 맞춘\n가우시안 혼합에서 뽑은 샘플",
        "map": "함께 학습한 2차원 모델",
        "tradeoff": "베타에 따른 재구성 오차와 KL",
        "rd_curve": "레이트-왜곡 곡선",
        "asked": "요청한 숫자",
        "style": "스타일: 행마다 코드 하나",
        "digit_styles": r"$\mathcal{N}(0, I)$에서 뽑은 코드의 스타일로 쓴 모든 숫자",
        "same_style": "같은 스타일, 모든 숫자: 테스트 숫자의 코드를 각 숫자로 디코딩",
        "test_digit": "테스트 숫자",
    },
}


def labels(lang):
    """The label table for ``lang``; refuses languages it has no labels for."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    if lang == "ko" and not _hangul_registered:
        use_hangul_font()  # on first use: importing kvae.plots leaves matplotlib as it was
    return LABELS[lang]


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _tile(images, ncols):
    """(N, H, W[, 1]) -> one (rows*H, ncols*W) mosaic, blank cells left at 0."""
    images = _array(images)
    images = images.reshape(images.shape[0], images.shape[1], images.shape[2])
    n, h, w = images.shape
    rows = -(-n // ncols)
    mosaic = np.zeros((rows * h, ncols * w), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        mosaic[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return mosaic


def image_grid(images, ncols=10, ax=None, title=None):
    """Show images (N, 28, 28, 1) in [0, 1] as one mosaic, ``ncols`` a row."""
    ncols = min(ncols, len(images))
    rows = -(-len(images) // ncols)
    fig, ax = _axes(ax, (ncols * 0.6, rows * 0.6 + 0.4))
    ax.imshow(_tile(images, ncols), cmap="gray_r", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def latent_scatter(
    z_mean, labels_, z_log_var=None, ax=None, lang="en", title=None, max_points=2000
):
    """Encoded means coloured by digit; with ``z_log_var``, each point's 1-sigma extent.

    The extent is the region ``q(z|x)`` puts most of its mass in: the VAE maps
    an image to a cloud, not a point. Two dimensions are drawn whole, with an
    ellipse per point. One dimension is drawn as a strip per digit (z across,
    digit up, a 1-sigma bar per point). With more than two, the two most active
    dimensions (largest variance of ``z_mean`` over the data, the ones the
    decoder uses) are drawn, and the title says so.
    """
    text = labels(lang)
    z_mean = np.asarray(z_mean)[:max_points]
    digits = np.asarray(labels_)[:max_points]
    sigma = None if z_log_var is None else np.exp(0.5 * np.asarray(z_log_var)[:max_points])
    if z_mean.shape[1] == 1:
        return _latent_strip(z_mean[:, 0], digits, sigma, ax, text, title)
    dims = [0, 1]
    if z_mean.shape[1] > 2:
        dims = sorted(np.argsort(-np.var(z_mean, axis=0), kind="stable")[:2].tolist())
        title = title or f"{text['latent']}: {text['active'].format(d=z_mean.shape[1])}"
    z_mean = z_mean[:, dims]
    fig, ax = _axes(ax, (6, 5.5))
    colours = plt.get_cmap("tab10")(digits % 10)
    if sigma is not None:
        sigma = sigma[:, dims]
        ellipses = EllipseCollection(
            widths=2 * sigma[:, 0],
            heights=2 * sigma[:, 1],
            angles=0,
            units="xy",
            offsets=z_mean,
            offset_transform=ax.transData,
            facecolors=colours,
            edgecolors="none",
            alpha=0.08,
        )
        ax.add_collection(ellipses)
    points = ax.scatter(
        z_mean[:, 0], z_mean[:, 1], c=digits, cmap="tab10", s=4, vmin=-0.5, vmax=9.5
    )
    fig.colorbar(points, ax=ax, ticks=range(10), label=text["digit"])
    ax.set_xlabel(f"$z_{{{dims[0] + 1}}}$")
    ax.set_ylabel(f"$z_{{{dims[1] + 1}}}$")
    ax.set_aspect("equal", adjustable="box")  # "datalim" would fight later set_xlim calls
    ax.autoscale_view()
    ax.set_title(title or text["latent"])
    return fig


def _latent_strip(z, digits, sigma, ax, text, title):
    """A one-dimensional latent space: one row per digit, jittered so the points separate."""
    fig, ax = _axes(ax, (6, 4.5))
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(z))
    rows = digits + jitter
    colours = plt.get_cmap("tab10")(digits % 10)
    if sigma is not None:
        ax.hlines(rows, z - sigma[:, 0], z + sigma[:, 0], colors=colours, alpha=0.08)
    ax.scatter(z, rows, c=digits, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    ax.set_yticks(range(10))
    ax.set_xlabel(text["z1"])
    ax.set_ylabel(text["digit"])
    ax.set_title(title or text["latent"])
    return fig


def latent_grid(decode, n=15, span=3.0, ax=None, lang="en", title=None):
    """Decode an ``n x n`` grid of 2-D codes over ``[-span, span]^2``.

    Args:
        decode: callable from codes (n*n, 2) to probabilities (n*n, 28, 28, 1),
            such as ``vae.decode``.
    """
    text = labels(lang)
    values = np.linspace(-span, span, n)
    # Row 0 of the mosaic is the top of the picture, so z2 runs from +span down.
    z = np.array([[z1, z2] for z2 in values[::-1] for z1 in values], dtype=np.float32)
    images = _array(decode(z))
    fig, ax = _axes(ax, (6, 6))
    ax.imshow(_tile(images, n), cmap="gray_r", vmin=0, vmax=1, extent=(-span, span, -span, span))
    ax.set_xlabel(text["z1"])
    ax.set_ylabel(text["z2"])
    ax.set_title(title or text["grid"])
    return fig


def reconstructions(x, x_hat, n=10, lang="en"):
    """Originals above, their reconstructions below."""
    text = labels(lang)
    n = min(n, len(x))
    fig, axes = plt.subplots(2, 1, figsize=(n * 0.6, 1.8))
    image_grid(_array(x)[:n], ncols=n, ax=axes[0], title=text["original"])
    image_grid(_array(x_hat)[:n], ncols=n, ax=axes[1], title=text["reconstruction"])
    fig.tight_layout()
    return fig


def interpolation_strip(decode, z_start, z_end, steps=10, ax=None, lang="en", title=None):
    """Decode evenly spaced points on the straight line from ``z_start`` to ``z_end``."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    z = (1 - t) * np.asarray(z_start, np.float32)[None] + t * np.asarray(z_end, np.float32)[None]
    return image_grid(_array(decode(z)), ncols=steps, ax=ax, title=title or labels(lang)["interp"])


def prior_samples(decode, latent_dim, n=64, seed=0, ax=None, lang="en", title=None):
    """Decode ``n`` codes drawn from the prior ``N(0, I)`` (numpy, seeded)."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    ncols = int(np.ceil(np.sqrt(n)))
    return image_grid(_array(decode(z)), ncols=ncols, ax=ax, title=title or labels(lang)["prior"])


def sampler_samples(decode, codes, lang="en"):
    """Decoded samples of several samplers side by side, one labelled mosaic each.

    Args:
        decode: callable from codes (n, latent_dim) to probabilities
            (n, 28, 28, 1), such as ``vae.decode``.
        codes: ``{"prior": z, "mixture": z, ...}``, arrays (n, latent_dim); a
            key with a label (``"prior"``, ``"mixture"``) is titled by it, any
            other by the key itself.

    Returns:
        The figure, one panel per entry of ``codes`` in its order.
    """
    text = labels(lang)
    fig, axes = plt.subplots(1, len(codes), figsize=(4.6 * len(codes), 5.2), squeeze=False)
    for ax, (name, z) in zip(axes[0], codes.items(), strict=True):
        z = np.asarray(z, dtype=np.float32)
        ncols = int(np.ceil(np.sqrt(len(z))))
        image_grid(_array(decode(z)), ncols=ncols, ax=ax, title=text.get(name, name))
    fig.tight_layout()
    return fig


def digit_grid(images, ax=None, lang="en", title=None):
    """Images of a conditional model: one column per digit asked for, one row per style.

    Args:
        images: (rows, digits, 28, 28, 1) in [0, 1]; ``images[r, d]`` is digit
            ``d`` decoded from row ``r``'s code, the same code along a row.
    """
    text = labels(lang)
    images = _array(images)
    rows, digits = images.shape[:2]
    fig, ax = _axes(ax, (digits * 0.6, rows * 0.6 + 1.0))
    _digit_columns(ax, images, text)
    ax.set_ylabel(text["style"])
    ax.set_title(title or text["digit_styles"])
    return fig


def same_style(originals, images, lang="en"):
    """Real digits (left) and each one's code decoded as every digit (right), row by row.

    Args:
        originals: (rows, 28, 28, 1) in [0, 1].
        images: (rows, digits, 28, 28, 1): ``images[r, d]`` is ``originals[r]``'s
            code (encoded with its own label) decoded with label ``d``.
    """
    text = labels(lang)
    images = _array(images)
    rows, digits = images.shape[:2]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=((digits + 1) * 0.6 + 0.4, rows * 0.6 + 1.2),
        gridspec_kw={"width_ratios": [1, digits]},
        layout="constrained",
    )
    left.imshow(_tile(_array(originals), 1), cmap="gray_r", vmin=0, vmax=1)
    left.set_xticks([])
    left.set_yticks([])
    left.set_xlabel(text["test_digit"])
    left.xaxis.set_label_position("top")
    _digit_columns(right, images, text)
    fig.suptitle(text["same_style"])
    return fig


def _digit_columns(ax, images, text):
    """Draw ``images`` (rows, digits, H, W, 1) as one mosaic, each column headed by its digit."""
    rows, digits, height, width = images.shape[:4]
    ax.imshow(
        _tile(images.reshape(rows * digits, *images.shape[2:]), digits),
        cmap="gray_r",
        vmin=0,
        vmax=1,
    )
    ax.set_xticks((np.arange(digits) + 0.5) * width - 0.5, [str(d) for d in range(digits)])
    ax.xaxis.tick_top()
    ax.set_xlabel(text["asked"])
    ax.xaxis.set_label_position("top")
    ax.set_yticks([])
    ax.tick_params(length=0)


def loss_curves(history, ax=None, lang="en", title=None):
    """Each metric per epoch; ``val_`` curves dashed in the same colour.

    The KL (a few nats) gets its own axis on the right: on the reconstruction's
    scale (hundreds of nats) it would be a flat line at the bottom.
    """
    text = labels(lang)
    history = getattr(history, "history", history)
    fig, ax = _axes(ax, (6, 4))
    twin = ax.twinx() if "kl_loss" in history else None
    for i, name in enumerate(k for k in history if not k.startswith("val_")):
        target = twin if name == "kl_loss" else ax
        colour = f"C{i}"
        epochs = np.arange(1, len(history[name]) + 1)
        target.plot(epochs, history[name], color=colour, label=text.get(name, name))
        if f"val_{name}" in history:
            label = f"{text.get(name, name)}, {text['val']}"
            target.plot(epochs, history[f"val_{name}"], "--", color=colour, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(text["epoch"])
    ax.set_ylabel(text["nats"])
    lines = ax.get_lines()
    if twin is not None:
        twin.set_ylabel(text["kl_loss"])
        lines += twin.get_lines()
    ax.legend(handles=lines, loc="upper right")
    if title:
        ax.set_title(title)
    return fig


def beta_tradeoff(betas, reconstruction, kl, lang="en"):
    """Left: reconstruction and KL against beta. Right: the rate-distortion curve."""
    text = labels(lang)
    betas, reconstruction, kl = (np.asarray(a, dtype=float) for a in (betas, reconstruction, kl))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    positions = np.arange(len(betas))  # even spacing: beta = 0 has no place on a log axis
    left.plot(positions, reconstruction, "o-", label=text["reconstruction_loss"])
    left.set_ylabel(text["reconstruction_loss"])
    twin = left.twinx()
    twin.plot(positions, kl, "s-", color="C1", label=text["kl_loss"])
    twin.set_ylabel(text["kl_loss"])
    left.set_xticks(positions, [f"{b:g}" for b in betas])
    left.set_xlabel(text["beta"])
    left.set_title(text["tradeoff"])
    left.legend(handles=left.get_lines() + twin.get_lines(), loc="upper center")
    right.plot(kl, reconstruction, "o-", color="C2")
    for b, r, d in zip(betas, kl, reconstruction, strict=True):
        right.annotate(f"β={b:g}", (r, d), textcoords="offset points", xytext=(5, 5))
    right.set_xlabel(text["rate"])
    right.set_ylabel(text["distortion"])
    right.set_title(text["rd_curve"])
    fig.tight_layout()
    return fig


def sigma_vs_beta(betas, mean_sigma, lang="en"):
    """The encoder's average sigma per beta, against the prior's sigma of 1."""
    text = labels(lang)
    betas, mean_sigma = np.asarray(betas, dtype=float), np.asarray(mean_sigma, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    positions = np.arange(len(betas))
    ax.plot(positions, mean_sigma, "o-", label=text["sigma"])
    ax.axhline(1.0, color="gray", linestyle=":", label=text["prior_sigma"])
    ax.set_xticks(positions, [f"{b:g}" for b in betas])
    ax.set_xlabel(text["beta"])
    ax.set_ylabel(r"$\sigma$")
    ax.set_ylim(0, 1.15)
    ax.legend()
    return fig

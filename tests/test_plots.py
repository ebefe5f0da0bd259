import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from kvae import plots  # noqa: E402

HANGUL = "잠재 공간"


def fake_decode(z):
    """A stand-in decoder for drawing only: one bright pixel whose place follows z."""
    z = np.asarray(z)
    images = np.zeros((len(z), 28, 28, 1), "float32")
    rows = np.clip(((z[:, 0] + 3) / 6 * 27).astype(int), 0, 27)
    images[np.arange(len(z)), rows, 14, 0] = 1.0
    return images


def test_importing_plots_leaves_matplotlib_settings_alone():
    code = (
        "import matplotlib.pyplot as plt; before = list(plt.rcParams['font.family']); "
        "from kvae import plots; assert plt.rcParams['font.family'] == before, 'import'; "
        "plots.labels('en'); assert plt.rcParams['font.family'] == before, 'en'; "
        "plots.labels('ko'); print(plt.rcParams['font.family'][0])"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == plots.HANGUL_FONT  # registered by the first Korean figure


def test_korean_labels_have_a_font_with_hangul_glyphs():
    plots.labels("ko")  # what every Korean figure calls first
    fig, ax = plt.subplots()
    title = ax.set_title(HANGUL)
    path = font_manager.findfont(title.get_fontproperties(), fallback_to_default=False)
    font = FT2Font(path)
    assert all(font.get_char_index(ord(ch)) != 0 for ch in HANGUL.replace(" ", "")), path
    plt.close(fig)


def test_latent_scatter_draws_one_ellipse_per_point():
    rng = np.random.default_rng(0)
    z_mean, z_log_var = rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) - 2
    fig = plots.latent_scatter(z_mean, rng.integers(0, 10, 50), z_log_var, lang="ko")
    ellipses = fig.axes[0].collections[0]
    np.testing.assert_allclose(ellipses._widths * 2, 2 * np.exp(0.5 * z_log_var[:, 0]))
    assert fig.axes[0].get_title() == plots.LABELS["ko"]["latent"]
    plt.close(fig)


def test_latent_scatter_draws_a_one_dimensional_code_as_a_strip_per_digit():
    rng = np.random.default_rng(0)
    z_mean, digits = rng.normal(size=(60, 1)), np.repeat(np.arange(10), 6)
    fig = plots.latent_scatter(z_mean, digits, z_mean * 0 - 2, lang="ko")
    ax = fig.axes[0]
    points = ax.collections[-1].get_offsets()
    np.testing.assert_allclose(points[:, 0], z_mean[:, 0])  # z across
    assert np.all(np.abs(points[:, 1] - digits) <= 0.25)  # each digit on its own row
    bars = ax.collections[0].get_segments()  # 1-sigma bars: sigma = exp(-2 / 2)
    np.testing.assert_allclose([b[1, 0] - b[0, 0] for b in bars], 2 * np.exp(-1.0), rtol=1e-6)
    plt.close(fig)


def test_latent_scatter_draws_the_two_most_active_of_many_dimensions():
    rng = np.random.default_rng(0)
    z_mean = rng.normal(size=(80, 6)) * np.array([0.1, 0.1, 3.0, 0.1, 2.0, 0.1])
    fig = plots.latent_scatter(z_mean, rng.integers(0, 10, 80), lang="en")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.collections[-1].get_offsets(), z_mean[:, [2, 4]])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$z_{3}$", "$z_{5}$")
    assert "two most active of 6" in ax.get_title()
    plt.close(fig)


def test_latent_grid_decodes_an_n_by_n_grid_with_z2_rising_upwards():
    seen = []

    def decode(z):
        seen.append(np.asarray(z))
        return fake_decode(z)

    fig = plots.latent_grid(decode, n=5, span=2.0)
    (z,) = seen
    assert z.shape == (25, 2)
    assert z[0].tolist() == [-2.0, 2.0] and z[-1].tolist() == [2.0, -2.0]
    assert fig.axes[0].images[0].get_array().shape == (5 * 28, 5 * 28)
    plt.close(fig)


@pytest.mark.parametrize("latent_dim", [1, 2, 16])
@pytest.mark.parametrize("lang", plots.LANGS)
def test_sampler_samples_draws_each_sampler_beside_the_other(latent_dim, lang):
    rng = np.random.default_rng(0)
    codes = {"prior": rng.standard_normal((9, latent_dim)), "mixture": np.zeros((9, latent_dim))}
    fig = plots.sampler_samples(fake_decode, codes, lang=lang)
    prior_ax, mixture_ax = fig.axes
    assert prior_ax.get_title() == plots.LABELS[lang]["prior"]
    assert mixture_ax.get_title() == plots.LABELS[lang]["mixture"]
    for ax, z in ((prior_ax, codes["prior"]), (mixture_ax, codes["mixture"])):
        mosaic = np.asarray(ax.images[0].get_array())
        assert mosaic.shape == (3 * 28, 3 * 28)  # nine codes: a 3 x 3 mosaic
        # Each tile holds its own code's image: the bright pixel's row follows z_1.
        for i, row in enumerate(np.clip(((z[:, 0] + 3) / 6 * 27).astype(int), 0, 27)):
            r, c = divmod(i, 3)
            tile = mosaic[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28]
            assert tile[row, 14] == 1.0 and tile.sum() == 1.0
    fig.canvas.draw()
    plt.close(fig)


@pytest.mark.parametrize("lang", plots.LANGS)
def test_every_figure_draws_in_both_languages(lang):
    x = np.random.default_rng(0).uniform(size=(12, 28, 28, 1)).astype("float32")
    history = {"loss": [3.0, 2.0], "val_loss": [3.5, 2.5], "kl_loss": [1.0, 1.5]}
    figures = [
        plots.reconstructions(x, x[::-1], n=6, lang=lang),
        plots.interpolation_strip(fake_decode, [-3, 0], [3, 0], steps=7, lang=lang),
        plots.prior_samples(fake_decode, latent_dim=2, n=9, lang=lang),
        plots.loss_curves(history, lang=lang),
        plots.beta_tradeoff([0, 1, 4], [120, 130, 180], [30, 10, 1], lang=lang),
        plots.sigma_vs_beta([0, 1, 4], [0.05, 0.3, 0.95], lang=lang),
    ]
    for fig in figures:
        assert isinstance(fig, plt.Figure) and fig.axes
        fig.canvas.draw()
        plt.close(fig)
    loss_axes, kl_axes = figures[3].axes  # the KL has its own scale on the right
    assert len(loss_axes.lines) == 2 and len(kl_axes.lines) == 1


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="lang must be one of"):
        plots.loss_curves({"loss": [1.0]}, lang="fr")


def test_figures_draw_straight_from_a_models_decode_on_every_backend():
    # Under PyTorch vae.decode returns a tensor that tracks gradients, which NumPy refuses to read.
    import kvae

    vae = kvae.VAE(kvae.build_encoder(2, hidden=(16,)), kvae.build_decoder(2, hidden=(16,)))
    for fig in (
        plots.interpolation_strip(vae.decode, [0.0, 0.0], [1.0, 1.0], 5),
        plots.prior_samples(vae.decode, 2, n=4, seed=0),
    ):
        mosaic = np.asarray(fig.axes[0].images[0].get_array())
        assert mosaic.size >= 4 * 28 * 28 and np.isfinite(mosaic).all()
        plt.close(fig)

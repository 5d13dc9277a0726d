"""The N* figure: N* over the truncated normal's (mu, sigma), and against alpha."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from optscale_jax.figures._axes import plain_log_ticks
from optscale_jax.figures.style import SERIES_COLORS, new_figure, styled


def optimal_n_numpy(
    mu: np.ndarray | float,
    sigma: np.ndarray | float,
    s_min: np.ndarray | float,
    alpha: np.ndarray | float,
    max_n: int,
) -> np.ndarray:
    """`optscale_jax.optimal_n` on broadcast numpy inputs, in float64, as an int64 array."""
    import jax
    import jax.numpy as jnp

    from optscale_jax import optimal_n

    arrays = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (mu, sigma, s_min, alpha))
    )
    # float64 whatever the process-wide x64 flag (other commands set it), so the figure is the
    # same whether it is drawn alone or after a replay.
    with jax.enable_x64(True):
        n_star = optimal_n(*(jnp.asarray(a, jnp.float64) for a in arrays), max_n=max_n)
        return np.asarray(n_star, dtype=np.int64)


@styled
def nstar_figure(
    s_min: float = 0.8,
    alpha: float = 0.9,
    mu_range: tuple[float, float] = (0.0, 1.0),
    sigma_range: tuple[float, float] = (0.02, 0.5),
    curve_mu: float = 0.5,
    curve_sigma: float = 0.2,
    curve_s_mins: Sequence[float] = (0.6, 0.7, 0.8, 0.9),
    max_n: int = 4096,
    resolution: int = 161,
) -> Figure:
    """N* = ceil(log(1 - alpha) / log F(s_min)) over (mu, sigma), and against alpha.

    Left: N* on a grid of truncated-normal parameters for one (s_min, alpha), log colour
    scale, labelled contours at powers of two, capped at `max_n`. Right: N* against alpha
    (logit axis) for several s_min at one (mu, sigma).

    Args:
        s_min: score threshold of the heatmap.
        alpha: target confidence of the heatmap.
        mu_range: heatmap mu axis.
        sigma_range: heatmap sigma axis (log-spaced).
        curve_mu: mu of the right panel.
        curve_sigma: sigma of the right panel.
        curve_s_mins: one curve per s_min.
        max_n: cap on N* (values at the cap mean "at least max_n").
        resolution: grid points per heatmap axis.

    Returns:
        The figure (double column wide).
    """
    figure = new_figure("double", 2.55)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    _draw_heatmap(figure, left, s_min, alpha, mu_range, sigma_range, max_n, resolution)
    _draw_against_alpha(right, curve_mu, curve_sigma, curve_s_mins, max_n)
    return figure


def _draw_heatmap(
    figure: Figure,
    ax: Axes,
    s_min: float,
    alpha: float,
    mu_range: tuple[float, float],
    sigma_range: tuple[float, float],
    max_n: int,
    resolution: int,
) -> None:
    """N* over (mu, sigma) at one (s_min, alpha): log colours, contours at powers of two."""
    from matplotlib.colors import LogNorm

    mu = np.linspace(*mu_range, resolution)
    sigma = np.geomspace(*sigma_range, resolution)
    grid = optimal_n_numpy(mu[None, :], sigma[:, None], s_min, alpha, max_n)
    mesh = ax.pcolormesh(
        mu,
        sigma,
        grid,
        norm=LogNorm(vmin=1, vmax=max_n),
        cmap="viridis",
        shading="nearest",
        rasterized=True,
    )
    levels = [2**k for k in range(1, int(math.log2(max_n)) + 1) if 2**k < max_n]
    contours = ax.contour(mu, sigma, grid, levels=levels, colors="white", linewidths=0.6)
    # Above 256 the contours crowd together: label every other one.
    labelled = [level for level in levels if level <= 256 or int(math.log2(level)) % 2 == 0]
    ax.clabel(contours, labelled, fmt="%d", fontsize=7, inline=True, inline_spacing=2)
    ax.axvline(s_min, color="white", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ticks = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)
    ax.set_yticks([t for t in ticks if sigma_range[0] <= t <= sigma_range[1]])
    plain_log_ticks(ax.yaxis)
    ax.text(s_min, sigma[-1], r" $s_{\min}$", color="white", fontsize=7, ha="left", va="top")
    ax.grid(False)
    ax.set_xlabel(r"$\mu$")
    ax.set_ylabel(r"$\sigma$")
    ax.set_title(rf"$N^*$ at $s_{{\min}}={s_min:g}$, $\alpha={alpha:g}$", loc="left")
    colorbar = figure.colorbar(mesh, ax=ax, pad=0.02, aspect=25)
    colorbar.set_label(rf"$N^*$ (capped at {max_n})")
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))


def _draw_against_alpha(
    ax: Axes, mu: float, sigma: float, s_mins: Sequence[float], max_n: int
) -> None:
    """N* against alpha (logit axis) at one (mu, sigma), one step curve per s_min."""
    alphas = 1 - np.geomspace(0.5, 1e-3, 200)
    for i, threshold in enumerate(s_mins):
        n_star = optimal_n_numpy(mu, sigma, threshold, alphas, max_n)
        ax.step(
            alphas,
            n_star,
            where="post",
            color=SERIES_COLORS[i % len(SERIES_COLORS)],
            label=rf"$s_{{\min}}={threshold:g}$",
        )
    ax.set_xscale("logit")
    ax.set_xlim(alphas[0], alphas[-1])
    ax.set_yscale("log", base=2)
    plain_log_ticks(ax.yaxis)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([0.5, 0.9, 0.99, 0.999])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlabel(r"target confidence $\alpha$")
    ax.set_ylabel(r"$N^*$")
    ax.set_title(rf"$\mu={mu:g}$, $\sigma={sigma:g}$", loc="left")
    ax.legend(loc="upper left")

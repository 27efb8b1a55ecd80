"""Matplotlib figures written as PNG files (the Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_calibration", "plot_misfit", "plot_pred_vs_true", "plot_predictive"]


def plot_predictive(
    path: str | Path,
    x_grid: np.ndarray,
    mean: np.ndarray,
    epistemic: tuple[np.ndarray, np.ndarray],
    total: tuple[np.ndarray, np.ndarray],
    x_data: np.ndarray,
    y_data: np.ndarray,
    truth: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Data, truth, predictive mean and the epistemic and total 95% bands on a 1-D grid.

    Args:
        path: the PNG file to write.
        x_grid: ``(g,)`` grid of inputs.
        mean: ``(g,)`` predictive mean on the grid.
        epistemic: ``(lower, upper)``, each ``(g,)``: the band of the ensemble spread.
        total: ``(lower, upper)``, each ``(g,)``: the predictive band including the noise.
        x_data: ``(n,)`` training inputs.
        y_data: ``(n,)`` training targets.
        truth: optional ``(g,)`` noise-free function on the grid.
        title: the figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> x = np.linspace(-1, 1, 50)
        >>> out = plot_predictive(os.path.join(tempfile.mkdtemp(), "p.png"), x, np.sin(x),
        ...                       (np.sin(x) - 0.1, np.sin(x) + 0.1),
        ...                       (np.sin(x) - 0.3, np.sin(x) + 0.3), x, np.sin(x))
        >>> out.suffix, out.stat().st_size > 0
        ('.png', True)
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(x_grid, *total, color="tab:blue", alpha=0.18, label="95% total (noise incl.)")
    ax.fill_between(x_grid, *epistemic, color="tab:blue", alpha=0.38, label="95% epistemic")
    ax.plot(x_data, y_data, ".", color="0.45", ms=3, label="data")
    if truth is not None:
        ax.plot(x_grid, truth, "k--", lw=1.2, label="truth")
    ax.plot(x_grid, mean, color="tab:red", lw=1.6, label="predictive mean")
    ax.set(xlabel="x", ylabel="y", title=title, xlim=(x_grid.min(), x_grid.max()))
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_misfit(path: str | Path, misfit: np.ndarray, title: str = "") -> Path:
    """Per-step ensemble misfit ``||Gamma^{-1/2}(y - G_j)||^2 / m`` (log-log).

    Args:
        path: the PNG file to write.
        misfit: ``(num_steps,)`` misfits, e.g. ``result.history.misfit`` of :func:`ekibnn.run`.
        title: the figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> plot_misfit(os.path.join(tempfile.mkdtemp(), "m.png"), 100 / np.arange(1, 51)).name
        'm.png'
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    steps = np.arange(1, len(misfit) + 1)
    ax.loglog(steps, misfit, lw=1.4)
    ax.axhline(1.0, color="0.5", ls=":", label="noise level")
    ax.set(xlabel="step", ylabel="mean misfit per observation", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_calibration(
    path: str | Path, nominal: np.ndarray, observed: np.ndarray, title: str = ""
) -> Path:
    """Calibration curve: observed against nominal frequency (the diagonal is perfect).

    Args:
        path: the PNG file to write.
        nominal: ``(L,)`` nominal levels (or mean confidences), in ``[0, 1]``.
        observed: ``(L,)`` observed frequencies (coverage or accuracy), e.g. from
            :func:`ekibnn.metrics.calibration_curve_regression` or
            :func:`ekibnn.metrics.reliability_diagram`.
        title: the figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> levels = np.array([0.5, 0.8, 0.95])
        >>> plot_calibration(os.path.join(tempfile.mkdtemp(), "c.png"), levels, levels).name
        'c.png'
    """
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.plot(nominal, observed, "o-", color="tab:blue")
    ax.set(xlabel="nominal", ylabel="observed", title=title, xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_pred_vs_true(
    path: str | Path, y_true: np.ndarray, mean: np.ndarray, std: np.ndarray, title: str = ""
) -> Path:
    """Predictions (with +-2 std error bars) against targets.

    Args:
        path: the PNG file to write.
        y_true: ``(n,)`` targets.
        mean: ``(n,)`` predictive means.
        std: ``(n,)`` predictive stds (the error bars are +-2 std).
        title: the figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> y = np.linspace(0, 1, 20)
        >>> plot_pred_vs_true(os.path.join(tempfile.mkdtemp(), "t.png"), y, y, 0.1 * y).name
        't.png'
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.errorbar(y_true, mean, yerr=2 * std, fmt=".", ms=3, alpha=0.6, elinewidth=0.6)
    lo, hi = float(np.min(y_true)), float(np.max(y_true))
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax.set(xlabel="target", ylabel="prediction", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)

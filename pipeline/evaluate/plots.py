"""FROC figure (matplotlib, Agg backend): log2 x axis 1/8..8 FPs/scan, bootstrap band, CPM in the title."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.utils import atomic_path


def plot_froc(result, path: str | os.PathLike, title: str = "FROC") -> Path:
    """Write the FROC curve of a :class:`~pipeline.evaluate.froc.FrocResult` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.array([float(k) for k in result.sensitivities])
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    try:
        if len(result.band_fps):
            ax.fill_between(result.band_fps, result.band_low, result.band_high, color="tab:blue", alpha=0.2,
                            lw=0, label=f"95% CI ({result.bootstrap} bootstrap resamples)")
        fps, sens = result.fps_per_scan, result.sensitivity
        lo, hi = rates.min(), rates.max()
        grid = np.geomspace(lo, hi, 400)
        ax.plot(grid, np.interp(grid, fps, sens), color="tab:blue", lw=2, label="FROC")
        ax.plot(rates, [result.sensitivities[k] for k in result.sensitivities], "o", color="tab:red", ms=4,
                label="operating points")
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo, hi)
        ax.set_xticks(rates)
        ax.set_xticklabels([k if float(k) >= 1 else f"1/{round(1 / float(k))}" for k in result.sensitivities])
        ax.set_ylim(0, 1)
        ax.set_xlabel("Average number of false positives per scan")
        ax.set_ylabel("Sensitivity")
        cpm = result.cpm
        ci = result.cpm_ci
        ci_txt = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if np.isfinite(ci).all() else ""
        caption = f"{title}: CPM {cpm:.3f}{ci_txt}" if np.isfinite(cpm) else f"{title}: CPM undefined"
        ax.set_title(caption)
        ax.grid(True, which="both", ls=":", alpha=0.6)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            # the title also as PNG text (``Title``), so a test can hold it against metrics.json
            fig.savefig(tmp, format="png", metadata={"Title": caption})
    finally:
        plt.close(fig)
    return Path(path)

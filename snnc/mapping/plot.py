"""The placement as a picture: one heat map of cores per chip, coloured by each core's
fullest budget, labelled with the layers it holds."""

from __future__ import annotations

import math
import os


def _grid(cores_per_chip: int) -> tuple[int, int]:
    cols = int(math.ceil(math.sqrt(cores_per_chip)))
    return int(math.ceil(cores_per_chip / cols)), cols


def plot_placement(report: dict, cores_per_chip: int, path: str | os.PathLike, title: str = "") -> None:
    """Write the heat map PNG to ``path`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from snnc.utils.io import atomic_write

    chips = max(1, int(report["summary"]["chips_used"]))
    used_chips = sorted({row["chip"] for row in report["cores"]})
    rows, cols = _grid(cores_per_chip)
    layer_ids = {name: i for i, name in enumerate(layer_order(report))}
    fig, axes = plt.subplots(1, chips, figsize=(max(6.5, min(4.5 * chips, 18)), 4.6), squeeze=False)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e6e6e6")  # grey: cores left free
    im = None
    for ax, chip in zip(axes[0], used_chips):
        heat = np.full((rows, cols), np.nan)
        for row in report["cores"]:
            if row["chip"] != chip:
                continue
            r, c = divmod(row["core"], cols)
            heat[r, c] = max(v for v in row["utilisation"].values() if v is not None)
            if cores_per_chip <= 160:
                ax.text(c, r, ",".join(str(layer_ids[n]) for n in row["layers"]), ha="center", va="center", fontsize=5 if cores_per_chip > 64 else 7, color="w")
        im = ax.imshow(np.ma.masked_invalid(heat), vmin=0, vmax=1, cmap=cmap)
        ax.set_title(f"chip {chip}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="fullest budget per core (fraction)")
    s = report["summary"]
    fig.suptitle(
        (title + "\n" if title else "")
        + f"{s['cores_used']} cores on {s['chips_used']} chip(s), labelled with their layers' indices\n"
        f"spikes/step between cores {s['spikes_per_step_between_cores']:,.0f}, between chips {s['spikes_per_step_between_chips']:,.0f}",
        fontsize=9,
    )
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def layer_order(report: dict) -> list[str]:
    """The placed layers in graph order (the report's ``layers``), else by first core."""
    if report.get("layers"):
        return list(report["layers"])
    seen: dict[str, None] = {}
    for row in report["cores"]:
        for name in row["layers"]:
            seen.setdefault(name)
    return list(seen)


def legend(report: dict) -> list[str]:
    """``<i> = <layer>`` lines matching the picture's labels."""
    return [f"{i} = {name}" for i, name in enumerate(layer_order(report))]

"""The picture of a forecasting run: the validation part, the model's forecast and the best baseline, and the
forecast beyond the data when a horizon was asked for (written as RUN/forecast.png)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmlab.files import atomic_write

if TYPE_CHECKING:
    from lmlab.series.forecast import ForecastResult


def plot_forecast(result: ForecastResult, path: Path) -> Path:
    """Actual values against the model's forecast (and the best baseline, dashed) over the validation part,
    then the forecast beyond the data (shaded) when a horizon was asked for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time = np.arange(result.split, result.split + len(result.actual))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(time, result.actual, color="0.55", linewidth=1, label="actual")
    model_mae = result.scores[result.model_name]["mae"]
    ax.plot(time, result.forecast, color="tab:blue", linewidth=1.4,
            label=f"{result.model_name} (MAE {model_mae:.3f})")
    if result.baselines:
        best = min(result.baselines, key=lambda name: result.scores[name]["mae"])
        ax.plot(time, result.baselines[best], color="tab:orange", linewidth=1, linestyle="--",
                label=f"{best} (MAE {result.scores[best]['mae']:.3f})")
    title = f"forecast of the validation part (from step {result.split})"
    if result.future is not None and len(result.future):
        end = result.split + len(result.actual)  # the first step after the data
        future_time = np.arange(end - 1, end + len(result.future))
        # Joined to the last actual value so the line leaves the data where it ends.
        ax.plot(future_time, np.r_[result.actual[-1], result.future], color="tab:green", linewidth=1.4,
                label=f"{result.model_name}, {len(result.future)} steps ahead (iterated)")
        ax.axvspan(end - 0.5, future_time[-1] + 0.5, color="tab:green", alpha=0.08)
        ax.axvline(end - 0.5, color="0.3", linewidth=0.8, linestyle=":")
        title += f" and {len(result.future)} steps beyond the data"
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path

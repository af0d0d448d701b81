"""PNG plots of a result (matplotlib, the optional ``bench`` extra): one small figure per
scenario, median bars with min-max whiskers, the baselines beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import NAMES, RESULTS


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_all(result: dict[str, Any], out: Path = RESULTS, prefix: str = "") -> dict[str, str]:
    """Scenario name -> PNG path relative to the repo root; {} without matplotlib."""
    if not available():
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, scenario in result["scenarios"].items():
        columns = [c for c in scenario["columns"] if c in ("MBps", "idle_p50_ms", "bulk_p50_ms", "jain",
                                                            "others_MBps", "others_stalled_MBps")][:4]
        variants = [v for v in scenario["variants"] if scenario["variants"][v]["summary"]]
        if not columns or not variants:
            continue
        fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 0.45 * len(variants) + 1.1),
                                 squeeze=False)
        for ax, column in zip(axes[0], columns, strict=True):
            meds, lo, hi = [], [], []
            for v in variants:
                s = scenario["variants"][v]["summary"].get(column)
                med = s["median"] if s else 0.0
                meds.append(med)
                lo.append(med - (s["min"] if s else 0.0))
                hi.append((s["max"] if s else 0.0) - med)
            colors = ["#3b75af" if not (v.startswith("raw") or v.startswith("KubeEdge")) else "#aaaaaa"
                      for v in variants]
            ax.barh(range(len(variants)), meds, xerr=[lo, hi], color=colors, capsize=3)
            ax.set_yticks(range(len(variants)))
            ax.set_yticklabels(variants if ax is axes[0][0] else [""] * len(variants), fontsize=8)
            ax.invert_yaxis()
            ax.set_title(NAMES.get(column, column) + (" (ms)" if column.endswith("_ms") else ""), fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
            if column == "MBps" and "link" in scenario:
                ax.axvline(scenario["link"]["rate_MBps"], color="#c0392b", linestyle="--", linewidth=1)
                ax.set_title("MB/s (dashed: link rate)", fontsize=9)
            elif column in ("idle_p50_ms", "bulk_p50_ms") and "link" in scenario:
                ax.axvline(2000 * scenario["link"]["one_way_delay_s"], color="#c0392b", linestyle="--", linewidth=1)
                ax.set_title(NAMES[column] + " ms (dashed: nominal RTT)", fontsize=9)
            if column.endswith("MBps") and max(meds) / max(min(m for m in meds if m > 0) if any(meds) else 1, 1e-9) > 30:
                ax.set_xscale("log")
        fig.suptitle(scenario["title"].replace("`", ""), fontsize=9)
        fig.tight_layout()
        path = out / f"{prefix}{name}.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        root = RESULTS.parent.parent
        made[name] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return made

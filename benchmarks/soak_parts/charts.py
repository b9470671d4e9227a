"""The soak benchmark's PNGs (``soak-*.png``, its own matplotlib code): one per group of series over
the run, the compared thirds shaded and the after-drain sample a cross.
"""

from __future__ import annotations

from pathlib import Path

PLOTS: list[tuple[str, str, list[tuple[str, str, float]]]] = [
    (
        "memory",
        "MiB",
        [
            ("worker_rss_bytes", "worker RSS", 2**20),
            ("worker_peak_rss_bytes", "worker peak RSS", 2**20),
            ("broker_rss_bytes", "broker RSS", 2**20),
        ],
    ),
    (
        "state",
        "MiB",
        [
            ("rocksdb_disk_bytes", "RocksDB on disk", 2**20),
            ("state_bytes", "kairos_state_bytes", 2**20),
            ("changelog_live_bytes", "changelog live bytes", 2**20),
        ],
    ),
    (
        "keys",
        "keys / users",
        [
            ("state_keys", "kairos_state_keys", 1.0),
            ("changelog_live_users", "changelog live user records", 1.0),
            ("changelog_live_optouts", "of which opt-out only (kept for good)", 1.0),
            ("changelog_live_partition_rows", "changelog live partition rows (indexes)", 1.0),
            ("changelog_live_item_rows", "of which item rows (co-visitation, trending)", 1.0),
            ("users_arrived", "user ids arrived", 1.0),
        ],
    ),
    (
        "changelog",
        "records (thousands) / MiB",
        [
            ("changelog_records_read", "changelog records (k)", 1e3),
            ("changelog_bytes_read", "changelog MiB", 2**20),
        ],
    ),
    (
        "flow",
        "count (thousands)",
        [
            ("events_produced", "events produced (k)", 1e3),
            ("events_processed", "events processed (k)", 1e3),
            ("pushes", "pushes (k)", 1e3),
            ("dead_letters", "dead letters (k)", 1e3),
            ("consumer_lag", "consumer lag (k)", 1e3),
        ],
    ),
]


def write_plots(samples: list[dict[str, float]], final: dict[str, float], out: Path) -> list[str]:
    """One PNG per group of series; thirds of the run shaded, the after-drain sample a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    xs = [s["minute"] for s in samples]
    for name, unit, series in PLOTS:
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for key, label, scale in series:
            line = ax.plot(xs, [s.get(key, 0.0) / scale for s in samples], marker=".", label=label)[0]
            if final:
                ax.plot([final["minute"]], [final.get(key, 0.0) / scale], "x", color=line.get_color())
        if len(xs) > 1:
            third = (xs[-1] - xs[0]) / 3
            ax.axvspan(xs[0], xs[0] + third, color="0.92", zorder=0)
            ax.axvspan(xs[-1] - third, xs[-1], color="0.92", zorder=0)
        ax.set_xlabel("minutes")
        ax.set_ylabel(unit)
        ax.set_title(f"soak: {name} (thirds compared shaded; x: after the drain)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        filename = f"soak-{name}.png"
        fig.savefig(out / filename, dpi=90)
        plt.close(fig)
        names.append(filename)
    return names

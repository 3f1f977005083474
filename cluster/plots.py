"""PNG plots of the paper's sweeps, for `zonesim paper`: one figure per claim a reader would rather see.

``make_plots(results, out_dir)`` takes aggregated cells (``cluster.aggregate.Cell``) keyed by sweep
name and writes, for each sweep it finds, one PNG of 800 x 500 pixels (8 x 5 inches at 100 dpi):

==========================  =====================  ===================================================
file                        sweep                  what
==========================  =====================  ===================================================
lowmem_vs_memory.png        p7-lowmem              lowmem_free_min_bytes (MiB) and alloc_failures
                                                   against memory (GiB), a line per policy
forkexec_latency.png        p4-forkexec            estimated microseconds per fork+exec+exit at
                                                   the machine's clock, bars per machine and
                                                   policy along anon_pages
flushes_per_io.png          p2-flushes-per-io      flushes_per_io against io_size, paper's 2 and 1
io_gain.png                 p3-io-gain             gain in cycles per I/O over the baseline (%)
                                                   against io_size, paper's band 2%..10%
slowdown_vs_entry_rate.png  p8-4g4g                wall-clock slowdown of 4g4g over stock (%)
                                                   against kernel entries per second, Molnar's 0-30%
alias_violations.png        p5-alias-violations    alias_violations per policy by machine and
                                                   touch_rate (symlog, every bar labelled)
exhaustions_vs_window.png   p6-exhaustion          congruence_exhaustions and stale_reads against
                                                   kernel_window (MiB)
tlb_entries.png             p9-tlb-entries         tlb_entries_used with and without variable-size
                                                   pages along kalloc_max_order
==========================  =====================  ===================================================

A point is a cell's mean over its seeds; its error bar is the half-width of the 95% confidence
interval of that mean (``Stat.ci95``; none when a cell has one seed). The three derived quantities,
fork/exec latency, I/O gain and 4G/4G slowdown, are ratios of means and have no error bar. A cell that has no
successful run, or lacks the key or the axis a plot needs, is left out of it; a sweep missing from
``results`` (or left with no point) has no plot. Sizes on the x axis are parsed from the spec's
strings with ``core.units.parse_size`` and drawn on a base-2 log scale, one tick per value.

Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas, no pyplot, no display, no global
state) and saved without the Software metadata, so the same cells give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from cluster import plot_series as ps
from cluster.aggregate import Cell
from core.units import GiB, KiB, MiB, format_size

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 5.0, 100  # 800 x 500 pixels


# -- drawing -------------------------------------------------------------------------------------


def _figure(rows: int = 1, sharex: bool = False) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def save(fig: Figure, path: str) -> str:
    """Write the figure as PNG at DPI (exactly WIDTH_IN x HEIGHT_IN inches) with no Software metadata."""
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _errs(points: Sequence[ps.Point]) -> list[float] | None:
    return None if all(p.err is None for p in points) else [p.err or 0.0 for p in points]


MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", "-.", ":")


def lines(ax: Axes, data: ps.Series) -> None:
    """A line with 95% CI error bars per label, each with its own marker and dash so that lines
    lying on each other stay visible."""
    for i, (label, points) in enumerate(data.items()):
        ax.errorbar([p.x for p in points], [p.y for p in points], yerr=_errs(points), label=label,
                    marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                    markersize=7 - i % 3, capsize=4)


def symlog_y(ax: Axes, data: ps.Series) -> None:
    """A y axis linear up to 1 and logarithmic beyond, from 0 (so zeros show) to 3x the highest
    point or error bar (room for bar labels)."""
    top = max((p.y + (p.err or 0.0) for points in data.values() for p in points), default=0.0)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, max(top, 1.0) * 3)


def grouped_bars(ax: Axes, data: ps.Series, fmt: str = "{:.4g}",
                 category_label: Callable[[object], str] = str) -> None:
    """Bars side by side per x category, one colour per label, each bar labelled with its value."""
    categories = sorted({p.x for points in data.values() for p in points})  # type: ignore[type-var]
    width = 0.8 / max(len(data), 1)
    for i, (label, points) in enumerate(data.items()):
        at = [categories.index(p.x) - 0.4 + width * (i + 0.5) for p in points]
        bars = ax.bar(at, [p.y for p in points], width, yerr=_errs(points), capsize=4, label=label)
        ax.bar_label(bars, labels=[fmt.format(p.y) for p in points], padding=2, fontsize=8)
    ax.set_xticks(range(len(categories)), [category_label(c) for c in categories])
    ax.margins(y=0.1)  # room for the labels above the tallest bar


def log2_x(ax: Axes, data: Iterable[ps.Series], unit: int) -> None:
    """A base-2 log x axis with one tick per value, labelled as a size (e.g. "64 KiB")."""
    xs = sorted({p.x for s in data for points in s.values() for p in points})  # type: ignore[type-var]
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [format_size(x * unit) for x in xs])  # type: ignore[operator]
    ax.xaxis.set_minor_locator(NullLocator())


def _finish(ax: Axes, title: str | None, xlabel: str | None, ylabel: str) -> None:
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _any(*data: ps.Series) -> bool:
    return any(points for s in data for points in s.values())


# -- the plots: cells -> PNG at path, or None when there is nothing to draw -----------------------


def plot_lowmem(cells: Sequence[Cell], path: str) -> str | None:
    free, failures = ps.lowmem_series(cells)
    if not _any(free, failures):
        return None
    fig, (top, bottom) = _figure(2, sharex=True)
    lines(top, free)
    lines(bottom, failures)
    log2_x(bottom, (free, failures), GiB)
    _finish(top, "P7: lowmem left and kernel allocation failures (x86 PAE, 3G/1G)", None,
            "lowmem free, minimum (MiB)")
    _finish(bottom, None, "memory size (log scale)", "allocation failures")
    return save(fig, path)


def plot_forkexec(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.forkexec_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    grouped_bars(ax, data, "{:.0f}", lambda x: f"{x:g}")
    _finish(ax, "P4: estimated fork+exec+exit latency (means at each machine's clock; no error bars)",
            "anonymous pages per process", "microseconds per fork+exec+exit")
    return save(fig, path)


def plot_flushes(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.flushes_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    lines(ax, data)
    ax.axhline(2, color="grey", linestyle="--", label="paper: stock")
    ax.axhline(1, color="black", linestyle=":", label="paper: unmapped")
    log2_x(ax, [data], KiB)
    ax.set_ylim(bottom=0)
    _finish(ax, "P2: cache flushes per process I/O (O_DIRECT into user buffers)", "I/O size (log scale)",
            "flushes per I/O request")
    return save(fig, path)


def plot_io_gain(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.io_gain_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    ax.axhspan(3, 9, color="tab:green", alpha=0.15, label="paper: around 6%")
    lines(ax, {f"{label} vs {ps.BASELINE}": points for label, points in data.items()})
    ax.axhline(0, color="black", linewidth=0.8)
    log2_x(ax, [data], KiB)
    _finish(ax, "P3: I/O gain in estimated cycles per request (io, flushes, copies, transient mappings)",
            "I/O size (log scale)",
            f"gain over {ps.BASELINE} (%)")
    return save(fig, path)


def plot_slowdown(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.slowdown_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    ax.axhspan(0, 30, color="tab:green", alpha=0.15, label="Molnar: 0-30%")
    lines(ax, {f"{label} vs {ps.BASELINE}": points for label, points in data.items()})
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    _finish(ax, "P8: wall-clock slowdown of the 4G/4G split (kernel work plus user time; means)",
            "kernel entries per second under stock (log scale)", f"slowdown over {ps.BASELINE} (%)")
    return save(fig, path)


def plot_aliases(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.alias_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    grouped_bars(ax, data, "{:.0f}", lambda x: "{}\ntouch_rate {:g}".format(*x))  # type: ignore[str-format]
    symlog_y(ax, data)
    _finish(ax, "P5: non-congruent alias violations (symlog; zeros labelled)", "machine, touch rate",
            "alias violations per run")
    return save(fig, path)


def plot_exhaustion(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.exhaustion_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    lines(ax, data)
    log2_x(ax, [data], MiB)
    symlog_y(ax, data)
    _finish(ax, "P6: congruence exhaustions and stale reads on the stress workload (symlog)",
            "kernel window (log scale)", "events per run")
    return save(fig, path)


def plot_tlb(cells: Sequence[Cell], path: str) -> str | None:
    data = ps.tlb_series(cells)
    if not _any(data):
        return None
    fig, (ax,) = _figure()
    grouped_bars(ax, data, "{:.0f}", lambda x: f"order {x:g}")
    _finish(ax, "P9: kernel TLB entries used with and without variable-size pages",
            "largest kernel allocation order (kalloc_max_order)", "TLB entries used")
    return save(fig, path)


# plot name -> (sweep name, draw); the file is NAME.png
PLOTS: dict[str, tuple[str, Callable[[Sequence[Cell], str], str | None]]] = {
    "lowmem_vs_memory": ("p7-lowmem", plot_lowmem),
    "forkexec_latency": ("p4-forkexec", plot_forkexec),
    "flushes_per_io": ("p2-flushes-per-io", plot_flushes),
    "io_gain": ("p3-io-gain", plot_io_gain),
    "slowdown_vs_entry_rate": ("p8-4g4g", plot_slowdown),
    "alias_violations": ("p5-alias-violations", plot_aliases),
    "exhaustions_vs_window": ("p6-exhaustion", plot_exhaustion),
    "tlb_entries": ("p9-tlb-entries", plot_tlb),
}


def make_plots(results: dict[str, list[Cell]], out_dir: str) -> dict[str, str]:
    """Write the PNG of every plot whose sweep is in ``results`` and has points; plot name -> path."""
    written: dict[str, str] = {}
    for name, (sweep, draw) in PLOTS.items():
        cells = results.get(sweep)
        if not cells:
            continue
        os.makedirs(out_dir, exist_ok=True)
        path = draw(cells, os.path.join(out_dir, f"{name}.png"))
        if path is not None:
            written[name] = path
    return written


"""Aggregates of a compare run: results.json, table.md and accuracy-vs-tokens plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from recipes.compare.probe import DENSE_MEASURES
from recipes.compare.reconstruction import MATCHING, SINKS, block_label, method_key
from recipes.quickstart.report import HEADLINE, scores


def cell_line(record: Mapping[str, Any]) -> str:
    """One summary line for a finished cell."""
    values = ", ".join(f"{k} {_fmt(v)}" for k, v in scores(record["metrics"]).items())
    return (
        f"{values}; {record['visual_tokens']} visual tokens, {record['llm_tokens_per_s']:.0f} tok/s"
    )


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def setting_label(cell: Mapping[str, Any]) -> str:
    text = f"{cell['encoder']} / {cell['compressor']}"
    if cell.get("blockwise"):
        text += " (block-wise)"
    if cell.get("resolution"):
        text += f" @ {cell['resolution']} px"
    if tiling := cell.get("tiling"):
        side = f" of {tiling['tile_size']} px" if tiling["tile_size"] else ""
        text += f" tiled (<= {tiling['max_tiles']} tiles{side})"
    return text


def markdown_table(results: Mapping[str, Any]) -> str:
    titles = [title for _, title, _ in HEADLINE.values()]
    lines = [
        "| setting | visual tokens / image | " + " | ".join(titles) + " | LLM tokens/s |",
        "|---" * (len(titles) + 3) + "|",
    ]
    for record in results["cells"]:
        values = " | ".join(_fmt(scores(record["metrics"])[t]) for t in titles)
        lines.append(
            f"| {setting_label(record['cell'])} | {record['visual_tokens']} | {values} | "
            f"{record['llm_tokens_per_s']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    if results.get("reconstruction"):
        text += reconstruction_tables(results["reconstruction"])
    return text


def reconstruction_tables(rows: list[Mapping[str, Any]]) -> str:
    """The paper's Table A10 on one seed's stage-0 features (rows of ``Context.reconstruction``):
    per K and input, one line per sink layout; then, on dense pages, the characters read."""
    sinks = _sinks(rows)  # (results written before the random sink have top-left only)
    text = (
        "\nReconstruction error of the stage-0 encoder's features (per-channel normalised MSE "
        "of the unmerged tokens; paper Table A10): ToMe with each window's destination (sink) "
        "at its top-left cell or a seeded random cell, matching on the features (as the "
        f"paper) or on the attention keys (as ToMe) or values of {_block(rows)}; avg-pool has "
        "no sink (the same on every line):\n\n"
        f"| K | input | grid | sink | {A10_COLUMNS} | ToMe (features) / avg-pool |\n"
        + "|---" * 9
        + "|\n"
    )
    for row in rows:
        size = f"{row['resolution']} px" if row.get("resolution") else "n/a"
        for sink in sinks:
            values = [row.get(method_key(m, sink)) for m in MATCHING] + [row.get("avgpool")]
            ratio = values[0] / values[-1] if values[0] is not None and values[-1] else math.nan
            text += (
                f"| {row['num_tokens']} | {size} | {row['grid'][0]}x{row['grid'][1]} | {sink} | "
                + " | ".join(_value(v) for v in values)
                + f" | {ratio:.2f} |\n"
            )
    for measure in DENSE_MEASURES:
        probed = [row for row in rows if f"{measure.prefix}tome" in row]
        if not probed:
            continue
        text += (
            f"\n{measure.intro}:\n\n| K | input | sink | none | {A10_COLUMNS} |\n"
            + "|---" * 8
            + "|\n"
        )
        for row in probed:
            for sink in sinks:
                names = ["none", *(method_key(m, sink) for m in MATCHING), "avgpool"]
                values = [row.get(f"{measure.prefix}{name}") for name in names]
                text += (
                    f"| {row['num_tokens']} | {row['resolution']} px | {sink} | "
                    + " | ".join(_value(v, measure.scale, measure.digits) for v in values)
                    + " |\n"
                )
    return text


A10_COLUMNS = "ToMe (features) | ToMe (keys) | ToMe (values) | avg-pool"


def _sinks(rows: list[Mapping[str, Any]]) -> list[str]:
    return [s for s in SINKS if any(method_key("features", s) in row for row in rows)]


def _block(rows: list[Mapping[str, Any]]) -> str:
    blocks = sorted({row.get("block", -1) for row in rows})
    return " / ".join(block_label(b) for b in blocks)


def _value(value: float | None, scale: float = 1.0, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{scale * value:.{digits}f}"


def accuracy_plot(results: Mapping[str, Any], path: Path) -> Path:
    """One panel per task. Cells at several budgets: headline score vs visual tokens per
    image, one line per method; all at one budget: one bar per setting."""
    titles = [title for _, title, _ in HEADLINE.values()]
    records = results["cells"]
    budgets = {record["visual_tokens"] for record in records}
    fig = Figure(figsize=(4 * len(titles), 3.4 if len(budgets) > 1 else 4.2), dpi=100)
    axes = fig.subplots(1, len(titles), squeeze=False)[0]
    if len(budgets) > 1:
        _lines(axes, titles, records)
    else:
        _bars(axes, titles, records, budgets.pop() if budgets else 0)
    for ax in axes:
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("score (0-100)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _name(cell: Mapping[str, Any]) -> str:
    name = cell["compressor"] + (" block-wise" if cell.get("blockwise") else "")
    name += f" tiles<={cell['tiling']['max_tiles']}" if cell.get("tiling") else ""
    return name + (f" @{cell['resolution']}px" if cell.get("resolution") else "")


def _lines(axes: Any, titles: list[str], records: list[Mapping[str, Any]]) -> None:
    series: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for record in records:
        name = _name(record["cell"])
        series.setdefault(name, []).append((record["visual_tokens"], scores(record["metrics"])))
    for ax, title in zip(axes, titles, strict=True):
        for name, points in series.items():
            points = sorted(points, key=lambda p: p[0])
            ax.plot([p[0] for p in points], [p[1][title] for p in points], "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("visual tokens per image")
        ax.set_title(title)
    axes[-1].legend(fontsize=7)


def _bars(axes: Any, titles: list[str], records: list[Mapping[str, Any]], budget: int) -> None:
    names = [_name(record["cell"]) for record in records]
    if len({record["cell"]["encoder"] for record in records}) > 1:
        names = [f"{r['cell']['encoder']} {n}" for r, n in zip(records, names, strict=True)]
    colors = [f"C{i}" for i in range(len(records))]
    for ax, title in zip(axes, titles, strict=True):
        values = [scores(record["metrics"])[title] for record in records]
        bars = ax.bar(range(len(records)), values, color=colors)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(records)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title} ({budget} visual tokens)")


def write(results: Mapping[str, Any], out: Path) -> list[Path]:
    """results.json, table.md, accuracy.png under ``out``."""
    out = Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = f"# compare: {results['name']}\n\n" + markdown_table(results)
    (out / "table.md").write_text(table, encoding="utf-8")
    plot = accuracy_plot(results, out / "accuracy.png")
    return [out / "results.json", out / "table.md", plot]


# --------------------------------------------------------------------------- over seeds


def seeds_table(summary: Mapping[str, Any]) -> str:
    """Mean ± sd per cell over the seeds, then each method's paired difference against ToMe
    (same seed, K and input) with its standard error."""
    from recipes.compare.stats import TITLES

    cells = summary["cells"]
    # a grid run with --cells for some seeds has cells with fewer seeds than the run
    lines = [
        f"Seeds {summary['seeds']}: mean ± sd per cell over the seeds it ran.\n",
        "| setting | visual tokens / image | seeds | " + " | ".join(TITLES) + " |",
        "|---" * (len(TITLES) + 3) + "|",
    ]
    for entry in cells.values():
        seeds = ", ".join(map(str, entry["seeds"]))
        lines.append(
            _seeds_row(entry, seeds, [format_pm(entry[t]["mean"], entry[t]["sd"]) for t in TITLES])
        )
    paired = [e for e in cells.values() if "vs_tome" in e]
    if paired:
        lines += [
            "",
            "Paired difference against ToMe at the same K and input (method − ToMe; ± its "
            "standard error over the seeds both ran; negative: ToMe ahead):\n",
            "| setting | visual tokens / image | paired seeds | " + " | ".join(TITLES) + " |",
            "|---" * (len(TITLES) + 3) + "|",
        ]
        for entry in paired:
            diff = entry["vs_tome"]
            values = [format_pm(diff[t]["mean"], diff[t]["se"], sign=True) for t in TITLES]
            lines.append(_seeds_row(entry, diff[TITLES[0]]["n"], values))
    return "\n".join(lines + _seeds_a10_lines(summary)) + "\n"


def _seeds_row(entry: Mapping[str, Any], seeds: Any, values: list[str]) -> str:
    """One cell's row of the seeds tables: setting, visual tokens, seeds, then ``values``."""
    setting = f"{setting_label(entry['cell'])}{blind_suffix(entry)}"
    return f"| {setting} | {entry['visual_tokens']} | {seeds} | " + " | ".join(values) + " |"


def _seeds_a10_lines(summary: Mapping[str, Any]) -> list[str]:
    """The stage-0 features' table over seeds (Table A10); none when nothing was measured."""
    rows = summary.get("reconstruction") or {}
    if not rows:
        return []
    measured = [m for m in DENSE_MEASURES if any(f"{m.prefix}tome" in r for r in rows.values())]
    dense = "".join(f"; {m.name} ({m.unit})" for m in measured)
    lines = [
        "",
        "The stage-0 features over seeds (mean ± sd; paper Table A10, keys and values of "
        f"{block_label(summary.get('reconstruction_block', -1))}): reconstruction error "
        f"(normalised MSE){dense}; none and avg-pool have no sink:\n",
        f"| K @ input | measure | sink | none | {A10_COLUMNS} |",
        "|---" * 8 + "|",
    ]
    for where, measures in rows.items():
        for label, prefix, scale, digits in (
            ("reconstruction error", "", 1.0, 3),
            *((m.name, m.prefix, m.scale, m.digits) for m in measured),
        ):
            for sink in SINKS:
                names = ["none", *(method_key(m, sink) for m in MATCHING), "avgpool"]
                cells = [measures.get(f"{prefix}{name}") for name in names]
                if all(c is None for c in cells[1:-1]):  # no ToMe measured with this sink
                    continue
                shown = [
                    "-"
                    if c is None
                    else format_pm(scale * c["mean"], scale * c["sd"], digits=digits)
                    for c in cells
                ]
                lines.append(f"| {where} | {label} | {sink} | " + " | ".join(shown) + " |")
    return lines


def format_pm(mean: float, spread: float, sign: bool = False, digits: int = 1) -> str:
    text = "n/a" if math.isnan(mean) else f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text if math.isnan(spread) else f"{text} ± {spread:.{digits}f}"


def blind_suffix(entry: Mapping[str, Any]) -> str:
    return " (image-blind)" if entry["cell"].get("blind") else ""


def measured_titles(entries: list[Mapping[str, Any]]) -> list[str]:
    """The headline tasks some cell has a score for (a grid that evaluates TextVQA only gets
    one panel, not two empty ones)."""
    from recipes.compare.stats import TITLES

    return [
        t for t in TITLES if any(not math.isnan(v) for e in entries for v in e[t]["values"])
    ] or [TITLES[0]]


def seeds_figure(summary: Mapping[str, Any]) -> Figure:
    """One panel per evaluated task: a bar per cell (mean over seeds, error bar = sd) with
    each seed's score as a point on it; when a method has several budgets, a second row:
    score vs visual tokens per image (mean ± sd, the seeds as points)."""
    entries = list(summary["cells"].values())
    titles = measured_titles(entries)
    series: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        if not entry["cell"].get("blind"):
            series.setdefault(_name(entry["cell"]), []).append(entry)
    curves = {
        name: pts for name, pts in series.items() if len({p["visual_tokens"] for p in pts}) > 1
    }
    rows = 2 if curves else 1
    fig = Figure(figsize=(max(4.4 * len(titles), 5.5), 4.2 * rows), dpi=100)
    axes = fig.subplots(rows, len(titles), squeeze=False)
    names = [
        f"{_name(e['cell'])}{' blind' if e['cell'].get('blind') else ''} K={e['visual_tokens']}"
        for e in entries
    ]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.bar(
            range(len(entries)),
            [e[title]["mean"] for e in entries],
            yerr=[_sd(e[title]) for e in entries],
            capsize=3,
            color=[f"C{i % 10}" for i in range(len(entries))],
            alpha=0.55,
        )
        for i, entry in enumerate(entries):
            _seed_points(ax, [i] * len(entry[title]["values"]), entry[title]["values"], 0.25)
        ax.set_xticks(range(len(entries)), names, rotation=40, ha="right", fontsize=7)
        ax.set_title(f"{title} (mean ± sd; points: one per seed)")
        ax.set_ylim(0, 100)
    if curves:
        for ax, title in zip(axes[1], titles, strict=True):
            for index, (name, points) in enumerate(curves.items()):
                points = sorted(points, key=lambda e: e["visual_tokens"])
                tokens = [p["visual_tokens"] for p in points]
                ax.errorbar(
                    tokens,
                    [p[title]["mean"] for p in points],
                    yerr=[_sd(p[title]) for p in points],
                    fmt="o-",
                    capsize=3,
                    color=f"C{index % 10}",
                    label=name,
                )
                for p in points:
                    xs = [p["visual_tokens"]] * len(p[title]["values"])
                    _seed_points(ax, xs, p[title]["values"], 0.0, color=f"C{index % 10}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("visual tokens per image")
            ax.set_ylim(0, 100)
            ax.set_title(f"{title} vs budget")
        axes[1][-1].legend(fontsize=7)
    axes[0][0].set_ylabel("score (0-100)")
    fig.tight_layout()
    return fig


def _sd(measure: Mapping[str, Any]) -> float:
    return 0.0 if math.isnan(measure["sd"]) else measure["sd"]


def _seed_points(
    ax: Any, xs: list[float], ys: list[float], spread: float, color: str = "black"
) -> None:
    """The seeds' scores as small points, spread sideways by ``spread`` so equal ones show."""
    n = len(xs)
    offsets = [spread * (i / (n - 1) - 0.5) if n > 1 else 0.0 for i in range(n)]
    ax.scatter(
        [x + o for x, o in zip(xs, offsets, strict=True)],
        ys,
        s=12,
        color=color,
        edgecolors="white",
        linewidths=0.5,
        zorder=3,
    )


def seeds_plot(summary: Mapping[str, Any], path: Path) -> Path:
    """``seeds_figure`` saved to ``path``."""
    seeds_figure(summary).savefig(path)
    return path


def write_seeds(summary: Mapping[str, Any], out: Path) -> list[Path]:
    """seeds.json, seeds.md, seeds.png under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = f"# compare: {summary['name']} over seeds\n\n" + seeds_table(summary)
    (out / "seeds.md").write_text(text, encoding="utf-8")
    return [out / "seeds.json", out / "seeds.md", seeds_plot(summary, out / "seeds.png")]


def write_analysis(summary: Mapping[str, Any], out: Path) -> list[Path]:
    """analysis.json and analysis.md (the stage-0 measures over seeds) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [f"# compare: {summary['name']}, the stage-0 features over seeds {summary['seeds']}"]
    text = "\n".join(lines + _seeds_a10_lines(summary)) + "\n"  # no cell was trained
    (out / "analysis.md").write_text(text, encoding="utf-8")
    return [out / "analysis.json", out / "analysis.md"]

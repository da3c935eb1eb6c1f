"""Line up `compare --seeds` runs that differ in one setting (a learning rate, the SFT steps:
``compare GRID -o KEY=VALUE --out DIR`` for each value): per cell and value, the score over
seeds, and each method's paired difference against ToMe at every value.

    python -m recipes.compare.sweep x0.5=runs/lr05x x1=runs/lr1x x2=runs/lr2x --out runs/lr

Reads each run's ``seeds.json``; writes ``sweep.md`` (what the runs' setups differ in, then
the tables) and ``sweep.png`` (score against the setting: a thin line per seed, the mean bold)
under ``--out``. A seed joins a line only where it ran; differences pair a method with ToMe
within one run and seed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from recipes.compare.report import blind_suffix, format_pm, measured_titles, setting_label

Run = tuple[str, Mapping[str, Any]]  # (label, seeds.json)


def load_runs(pairs: Sequence[str]) -> list[Run]:
    """``LABEL=DIR`` items -> (label, the run's seeds.json), in the order given."""
    runs = []
    for item in pairs:
        label, folder = _label_and_folder(item)
        path = folder / "seeds.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; pass the --out folder of a `compare --seeds` run"
            )
        runs.append((label, json.loads(path.read_text(encoding="utf-8"))))
    if len({label for label, _ in runs}) != len(runs):
        raise ValueError(f"labels must differ; got {[label for label, _ in runs]}")
    folders = [folder.resolve() for folder in _folders(pairs)]
    if twice := sorted({str(f) for f in folders if folders.count(f) > 1}):
        raise ValueError(f"{', '.join(twice)} given twice; each setting is its own run")
    return runs


def _label_and_folder(item: str) -> tuple[str, Path]:
    label, sep, folder = item.partition("=")
    if not sep or not label or not folder:
        raise ValueError(f"{item!r} is not LABEL=DIR (e.g. x2=runs/compare/lr2x)")
    return label, Path(folder)


def _folders(pairs: Sequence[str]) -> list[Path]:
    return [_label_and_folder(item)[1] for item in pairs]


def setup_differences(folders: Sequence[Path]) -> dict[str, list[Any]]:
    """The setup keys (dotted, e.g. ``schedule.lr``) whose values differ between the runs,
    read from each run's first seed's setup.json (the seed itself left out): what the sweep
    varies, one value per run (None: not set). {} when they agree or none has a setup."""
    setups = []
    for folder in folders:
        files = sorted(Path(folder).glob("seed*/setup.json"))
        setups.append(_flat(json.loads(files[0].read_text(encoding="utf-8"))) if files else {})
    keys = sorted(set().union(*setups) - {"seed"})
    return {
        key: [s.get(key) for s in setups]
        for key in keys
        if len({json.dumps(s.get(key)) for s in setups}) > 1
    }


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences_text(labels: Sequence[str], differences: Mapping[str, list[Any]]) -> str:
    """One line per differing setup key, or a warning when the runs share one setup."""
    if not differences:
        return "The runs' setups do not differ (or were not found): check the folders.\n"
    lines = [
        f"- {key}: "
        + ", ".join(f"{label} {_shown(v)}" for label, v in zip(labels, values, strict=True))
        for key, values in differences.items()
    ]
    return "The runs differ in:\n\n" + "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    return "(not set)" if value is None else json.dumps(value)


def cell_keys(runs: Sequence[Run]) -> list[str]:
    """Every cell key of the runs, in first-seen order."""
    keys: dict[str, None] = {}
    for _, summary in runs:
        keys.update(dict.fromkeys(summary["cells"]))
    return list(keys)


def cell_label(entry: Mapping[str, Any]) -> str:
    """ "tiny / tome K=16" (+ " (image-blind)"): one name per cell key."""
    return f"{setting_label(entry['cell'])}{blind_suffix(entry)} K={entry['visual_tokens']}"


def sweep_table(runs: Sequence[Run], title: str) -> str:
    """Mean ± sd (seeds) per cell and setting, then method − ToMe (± SE, paired) per setting."""
    labels = [label for label, _ in runs]
    head = "| cell | " + " | ".join(labels) + " |\n" + "|---" * (len(labels) + 1) + "|"
    rows, diffs = [], []
    for key in cell_keys(runs):
        entries = [summary["cells"].get(key) for _, summary in runs]
        name = cell_label(next(e for e in entries if e))
        rows.append(f"| {name} | " + " | ".join(_score(e, title) for e in entries) + " |")
        if any(e and "vs_tome" in e for e in entries):
            diffs.append(f"| {name} | " + " | ".join(_diff(e, title) for e in entries) + " |")
    text = f"{title}, mean ± sd over seeds (seeds in brackets):\n\n{head}\n" + "\n".join(rows)
    if len({tuple(s["seeds"]) for _, s in runs}) > 1:
        text += (
            "\n\nThe runs have different seeds: a mean's change from one setting to the next "
            "mixes the setting with the seeds; compare the seeds both ran."
        )
    if diffs:
        text += (
            "\n\nMethod − ToMe, paired over the seeds both ran (± its standard error; negative: "
            f"ToMe ahead):\n\n{head}\n" + "\n".join(diffs)
        )
    return text + "\n"


def _score(entry: Mapping[str, Any] | None, title: str) -> str:
    if entry is None:
        return "-"
    seeds = ", ".join(map(str, entry["seeds"]))
    return f"{format_pm(entry[title]['mean'], entry[title]['sd'])} ({seeds})"


def _diff(entry: Mapping[str, Any] | None, title: str) -> str:
    if entry is None or "vs_tome" not in entry:
        return "-"
    diff = entry["vs_tome"][title]
    return f"{format_pm(diff['mean'], diff['se'], sign=True)} (n = {diff['n']})"


def sweep_figure(runs: Sequence[Run], titles: Sequence[str], xlabel: str = "setting") -> Figure:
    """Score against the setting per cell and task: each seed a thin line, the mean bold."""
    fig = Figure(figsize=(5.5 * len(titles), 4.2), dpi=100)
    for ax, title in zip(fig.subplots(1, len(titles), squeeze=False)[0], titles, strict=True):
        _sweep_axes(ax, runs, title, xlabel)
    fig.tight_layout()
    return fig


def _sweep_axes(ax: Any, runs: Sequence[Run], title: str, xlabel: str) -> None:
    xs = range(len(runs))
    for index, key in enumerate(cell_keys(runs)):
        color = f"C{index % 10}"
        entries = [summary["cells"].get(key) for _, summary in runs]
        per_seed: dict[int, dict[int, float]] = {}
        for x, entry in zip(xs, entries, strict=True):
            for seed, value in _seed_values(entry, title).items():
                per_seed.setdefault(seed, {})[x] = value
        for points in per_seed.values():
            ax.plot(list(points), list(points.values()), ".-", color=color, alpha=0.35, lw=1)
        means = [(x, e[title]["mean"]) for x, e in zip(xs, entries, strict=True) if e]
        name = cell_label(next(e for e in entries if e))
        ax.plot(*zip(*means, strict=True), "o-", color=color, lw=2.5, label=name)
    ax.set_xticks(list(xs), [label for label, _ in runs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{title} (0-100)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title}: mean (bold) and each seed (thin)")
    ax.legend(fontsize=8)


def _seed_values(entry: Mapping[str, Any] | None, title: str) -> dict[int, float]:
    """{seed: score} of one cell in one run (none where the run lacks the cell)."""
    if entry is None:
        return {}
    return dict(zip(entry["seeds"], entry[title]["values"], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=DIR: a `compare --seeds` --out folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for sweep.md, sweep.png")
    parser.add_argument("--xlabel", default="setting", help="the figure's x-axis label")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    entries = [e for _, summary in runs for e in summary["cells"].values()]
    titles = measured_titles(entries)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = [label for label, _ in runs]
    differences = differences_text(labels, setup_differences(_folders(args.runs)))
    print(differences, end="")
    text = "\n".join([differences, *(sweep_table(runs, title) for title in titles)])
    (args.out / "sweep.md").write_text(text, encoding="utf-8")
    sweep_figure(runs, titles, args.xlabel).savefig(args.out / "sweep.png")
    print(f"wrote {args.out / 'sweep.md'}, {args.out / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

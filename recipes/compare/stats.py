"""Seeds and statistics of a compare grid: mean ± sd per cell, and each method's paired
difference against ToMe over seeds with its standard error.

    >>> summary = aggregate({0: results_seed0, 1: results_seed1, 2: results_seed2})
    >>> summary["cells"]["tiny-avgpool-k16"]["TextVQA acc"]          # {"mean", "sd", "n", ...}
    >>> summary["cells"]["tiny-avgpool-k16"]["vs_tome"]["TextVQA acc"]  # {"mean", "se", "n"}

A difference is paired: for each seed, method minus the ToMe cell of the same seed, budget K,
input resolution and encoder (the same data, stage 0 and schedule); its standard error is the
sample sd of the per-seed differences over sqrt(n). With one seed sd and se are NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from recipes.quickstart.report import HEADLINE, scores

TITLES = tuple(title for _, title, _ in HEADLINE.values())


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); sd is NaN for fewer than two values.
    A NaN value (a task the grid did not evaluate) makes both NaN: "n/a" in the tables."""
    if not values or any(math.isnan(v) for v in values):  # statistics.stdev raises on NaN
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a_i - b_i and its standard error sd(a - b) / sqrt(n) (NaN for n < 2)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal counts; got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = mean_sd(diffs)
    return mean, sd / math.sqrt(len(diffs)) if diffs else math.nan


def partner_key(cell: Mapping[str, Any]) -> str | None:
    """The key of the output-level ToMe cell ``cell`` is compared with (None for that cell,
    and for ``none``: every patch has no ToMe cell of the same K)."""
    if cell["compressor"] == "none":
        return None
    if cell["compressor"] == "tome" and not cell.get("blockwise") and not cell.get("blind"):
        return None
    parts = [cell["encoder"], "tome", f"k{cell['num_tokens']}"]
    if cell.get("resolution"):
        parts.append(f"r{cell['resolution']}")
    return "-".join(parts).replace("/", "_")


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """{seed: results.json of that seed} -> per cell key: the cell, visual tokens, and per
    headline metric {mean, sd, n, values}; plus ``vs_tome`` {metric: {mean, se, n}} where
    the ToMe partner cell exists in the same seeds."""
    seeds = sorted(per_seed)
    by_key: dict[str, dict[int, Mapping[str, Any]]] = {}
    for seed in seeds:
        for record in per_seed[seed]["cells"]:
            by_key.setdefault(record["key"], {})[seed] = record
    cells: dict[str, Any] = {}
    for key, records in by_key.items():
        first = next(iter(records.values()))
        entry: dict[str, Any] = {
            "cell": first["cell"],
            "visual_tokens": first["visual_tokens"],
            "seeds": sorted(records),
        }
        for title in TITLES:
            values = [scores(records[s]["metrics"])[title] for s in sorted(records)]
            mean, sd = mean_sd(values)
            entry[title] = {"mean": mean, "sd": sd, "n": len(values), "values": values}
        cells[key] = entry
    for key, entry in cells.items():
        partner = partner_key(entry["cell"])
        if partner is None or partner not in by_key:
            continue
        both = [s for s in entry["seeds"] if s in by_key[partner]]
        entry["vs_tome"] = {}
        for title in TITLES:
            mine = [scores(by_key[key][s]["metrics"])[title] for s in both]
            tome = [scores(by_key[partner][s]["metrics"])[title] for s in both]
            mean, se = paired_difference(mine, tome)
            entry["vs_tome"][title] = {"mean": mean, "se": se, "n": len(both)}
    return {"seeds": seeds, "cells": cells, "reconstruction": reconstruction_over_seeds(per_seed)}


def reconstruction_over_seeds(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per "K@size": each numeric measure of the seeds' reconstruction rows, mean ± sd."""
    values: dict[str, dict[str, list[float]]] = {}
    for results in per_seed.values():
        for row in results.get("reconstruction") or []:
            where = f"{row['num_tokens']} @ {row['resolution']} px"
            for name, value in row.items():
                if name not in ("num_tokens", "resolution", "grid") and isinstance(value, float):
                    values.setdefault(where, {}).setdefault(name, []).append(value)
    out: dict[str, Any] = {}
    for where, measures in values.items():
        out[where] = {}
        for name, vals in measures.items():
            mean, sd = mean_sd(vals)
            out[where][name] = {"mean": mean, "sd": sd, "n": len(vals)}
    return out

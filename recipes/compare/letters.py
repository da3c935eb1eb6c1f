"""Letter-level reading of a word grid's answers (dense_word_pairs / dense_word_anagrams).

What a cell's wrong answers are made of tells what its visual tokens kept: the right letters
in the wrong order (an anagram of the truth), one letter off, or something else.

    python -m recipes.compare.letters runs/compare/dense_word_anagrams

Answers are compared as raw lower-case strings, stricter than lmms-eval's normalised match
(which, for one, maps "ten" to "10"), so exact match here can sit below the table's.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class LetterStats(NamedTuple):
    """Shares in % of one cell's answers."""

    exact: float  # answer == truth
    same_letters: float  # the truth's letters in any order (exact answers included)
    wrong_anagrams: float  # of the wrong answers: the truth's letters in another order
    wrong_one_off: float  # of the wrong answers: as long as the truth, one letter different


def letter_stats(answers: Mapping[int, str], truths: Mapping[int, str]) -> LetterStats:
    """Stats of ``answers`` (question id -> answer) against ``truths`` over the same ids."""
    if not answers or set(answers) != set(truths):
        raise ValueError(
            f"answers and truths must cover the same question ids; got {len(answers)} answers "
            f"for {len(truths)} questions ({len(set(answers) ^ set(truths))} ids in only one)"
        )
    pairs = [(answers[q].strip().lower(), truths[q].strip().lower()) for q in truths]
    wrong = [(a, t) for a, t in pairs if a != t]

    def share(count: int, total: int) -> float:
        return 100.0 * count / total if total else 0.0

    return LetterStats(
        exact=share(len(pairs) - len(wrong), len(pairs)),
        same_letters=share(sum(same_letters(a, t) for a, t in pairs), len(pairs)),
        wrong_anagrams=share(sum(same_letters(a, t) for a, t in wrong), len(wrong)),
        wrong_one_off=share(sum(one_letter_apart(a, t) for a, t in wrong), len(wrong)),
    )


def same_letters(a: str, b: str) -> bool:
    """The same letters, in any order (anagrams, or equal)."""
    return sorted(a) == sorted(b)


def one_letter_apart(a: str, b: str) -> bool:
    """Same length, exactly one position different."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


def seed_truths(seed_dir: Path) -> dict[int, str]:
    """question id -> first reference answer of a seed's TextVQA eval split."""
    from datasets import load_from_disk

    from vlm.evaluation.schemas import SPLITS

    split = load_from_disk(str(seed_dir / "data" / "eval" / "textvqa"))[SPLITS["textvqa"]]
    return {
        row["question_id"]: row["answers"][0]
        for row in split.select_columns(["question_id", "answers"])
    }


def cell_answers(cell_dir: Path) -> dict[int, str] | None:
    """question id -> answer from a cell's lmms-eval TextVQA submission (None: not evaluated)."""
    files = sorted((cell_dir / "eval" / "submissions").glob("textvqa_submission_*.json"))
    if not files:
        return None
    rows = json.loads(files[-1].read_text(encoding="utf-8"))
    return {row["question_id"]: row["answer"] for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a compare --seeds output folder")
    args = parser.parse_args(argv)
    seeds = sorted(p for p in args.run.glob("seed*") if p.is_dir())
    if not seeds:
        parser.error(f"{args.run} has no seed* folders; pass the --out of a `compare --seeds` run")
    print(
        "| seed | cell | exact | right letters, any order | wrong: anagram | wrong: one letter off |"
    )
    print("|---|---|---|---|---|---|")
    for seed_dir in seeds:
        truths = seed_truths(seed_dir)
        for cell in sorted(p for p in (seed_dir / "cells").iterdir() if p.is_dir()):
            answers = cell_answers(cell)
            if answers is None:
                continue
            s = letter_stats(answers, truths)
            print(
                f"| {seed_dir.name} | {cell.name} | {s.exact:.1f} | {s.same_letters:.1f} | "
                f"{s.wrong_anagrams:.1f} | {s.wrong_one_off:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

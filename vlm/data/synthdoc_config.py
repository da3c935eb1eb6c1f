"""What synthdoc draws from: the content pools, ``SynthDocConfig`` and the per-record
``StyleContext`` that the style builders and layouts share (a leaf module, so that
``synthdoc``, ``synthdoc_styles`` and ``synthdoc_layout`` import it and never each other
in a circle).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from ..schema import STRICT
from .synthdoc_draw import fit_size, text_width

STYLES = ("textvqa", "docvqa", "ocrbench")
LEVELS = ("easy", "medium", "hard", "dense", "dense-lite")  # dense*: synthdoc_dense
DEFAULT_LEVELS = LEVELS[:3]  # the dense levels are asked for by name
DENSE_LEVELS = LEVELS[3:]
# fmt: off
WORDS = (
    "apple", "river", "stone", "cloud", "green", "house", "music", "paper", "train", "water",
    "bread", "chair", "dance", "earth", "field", "grape", "heart", "light", "money", "night",
    "ocean", "piano", "queen", "radio", "sugar", "table", "uncle", "voice", "watch", "youth",
    "zebra", "cat", "dog", "sun", "map", "box", "key", "pen", "cup", "bus", "car", "hat",
    "tree", "bird", "fish", "milk", "door", "road", "ship", "farm", "lamp", "book", "coin",
    "ring", "rose", "snow", "star", "wind", "gold", "iron", "salt", "rain", "moon", "leaf",
    "horse", "lemon", "mango", "tiger", "robot", "pizza", "candy", "shoe", "bank", "park",
    "hotel", "store", "cafe", "exit", "stop", "open", "sale", "menu", "taxi", "coffee",
    "garden", "school", "market", "bridge", "window", "doctor", "summer", "winter", "orange",
    "yellow", "silver", "planet", "rocket", "castle", "forest", "island",
)
# fmt: on
WORD_KEYS = ("name", "city", "item", "owner", "brand", "shop")
NUMBER_KEYS = ("total", "code", "price", "room", "size", "count")
FORM_KEYS = {"any": WORD_KEYS + NUMBER_KEYS, "words": WORD_KEYS, "numbers": NUMBER_KEYS}
# OCRBench question_type values (lmms-eval's ocrbench score table) used here
REGULAR, IRREGULAR = "Regular Text Recognition", "Irregular Text Recognition"
DIGITS, NON_SEMANTIC = "Digit String Recognition", "Non-Semantic Text Recognition"


def margin(size: int) -> int:
    return max(2, size // 16)


class StyleContext:
    """Random choices shared by the style builders for one record."""

    def __init__(self, rng: random.Random, config: SynthDocConfig, level: str) -> None:
        self.rng, self.config, self.level = rng, config, level
        self.font_path = rng.choice(config.fonts) if config.fonts else None
        s = config.image_size
        shrink = {"easy": 1.0, "medium": 0.8, "hard": 0.65}.get(level, 1.0)
        lo, hi = (max(config.min_font_size, round(f * s * shrink)) for f in config.font_scale)
        self.sizes = range(config.min_font_size, hi + 1)
        self.preferred = range(lo, hi + 1)  # sizes tried first: the level's range
        self.margin = margin(s)

    @property
    def form_keys(self) -> tuple[str, ...]:
        """The form fields a docvqa record may ask about (``config.form_values``)."""
        return FORM_KEYS[self.config.form_values]

    def word(self) -> str:
        return self.rng.choice(self.config.words)

    def words(self, k: int) -> list[str]:
        words = self.config.words
        return (
            self.rng.sample(words, k) if len(set(words)) >= k else [self.word() for _ in range(k)]
        )

    def digits(self, lo: int, hi: int, number: bool = True) -> str:
        """lo..hi random digits; a ``number`` does not start with 0 (unless it is "0")."""
        n = self.rng.randint(lo, hi)
        first = self.rng.choice(string.digits[1:] if number and n > 1 else string.digits)
        return first + "".join(self.rng.choice(string.digits) for _ in range(n - 1))

    def fit(self, texts: list[str], width: int, height: int, rows: int = 1) -> int | None:
        """A font size at which ``texts`` fit: random in the level's range when it fits."""
        best = fit_size(texts, width, height, self.sizes, self.font_path, rows)
        if best is None or best < self.preferred.start:
            return best
        return self.rng.randint(self.preferred.start, min(best, self.preferred.stop - 1))

    def paper_and_ink(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        rng = self.rng
        if not self.config.colors:
            return (250, 250, 250), (15, 15, 15)
        paper = tuple(rng.randint(215, 255) for _ in range(3))
        ink = tuple(rng.randint(0, 80) for _ in range(3))
        if self.level != "easy" and rng.random() < 0.2:  # light text on dark paper
            paper, ink = tuple(255 - c for c in paper), tuple(255 - c for c in ink)
        return paper, ink

    def noise(self) -> float:
        chance = {"easy": 0.0, "medium": 0.5, "hard": 1.0}[self.level] * self.config.noise_prob
        return self.rng.uniform(4.0, 14.0) if self.rng.random() < chance else 0.0

    def canvas(self) -> tuple[int, int]:
        s = self.config.image_size
        if self.level == "hard" and self.rng.random() < self.config.page_prob:
            return s * self.config.page_scale, s * self.config.page_scale
        return s, s

    def place(self, width: int, height: int, canvas: tuple[int, int]) -> tuple[int, int]:
        """Random top-left so a width x height block fits inside the canvas margins."""
        m = self.margin
        return (
            self.rng.randint(m, max(m, canvas[0] - m - width)),
            self.rng.randint(m, max(m, canvas[1] - m - height)),
        )


@dataclass
class SynthDocConfig:
    """What synthdoc draws. Lists from YAML are accepted for tuple fields.

    image_size:  side in px of every image (scenes, forms, transcriptions), >= 48; large pages
                 are ``page_scale`` x this, with text sized for ``image_size``.
    vocabulary:  the words drawn (None: the built-in ``WORDS``); a small closed list makes the
                 task learnable by a word-level tiny model. Each must fit one line of the image.
    styles / levels: what each record draws from, uniformly ("textvqa" | "docvqa" |
                 "ocrbench"; "easy" | "medium" | "hard").
    seed:        with the config, fixes every record.
    font_scale:  easy-level font size range as fractions of ``image_size`` (medium x0.8,
                 hard x0.65); never below ``min_font_size`` px.
    fonts:       .ttf/.otf files to draw with (one per record); empty: Pillow's bundled font.
    colors:      coloured inks/papers; False: near-black on near-white everywhere.
    noise_prob:  chance of a noisy background at hard level (half of it at medium).
    page_prob:   chance that a hard docvqa/ocrbench record is a large, mostly white page.
    form_values: which form fields docvqa asks about: "any" (name/city/... with word values
                 and total/code/... with numbers), "words" or "numbers" only (one answer
                 kind, e.g. for a reader that learns words but not digit strings).
    """

    __pydantic_config__ = STRICT

    image_size: int = 128
    vocabulary: list[str] | None = None
    styles: tuple[str, ...] = STYLES
    levels: tuple[str, ...] = DEFAULT_LEVELS
    seed: int = 0
    font_scale: tuple[float, float] = (0.2, 0.28)
    min_font_size: int = 7
    fonts: tuple[str, ...] = ()
    colors: bool = True
    noise_prob: float = 0.5
    page_prob: float = 0.3
    page_scale: int = 4
    form_values: str = "any"

    def __post_init__(self) -> None:
        for name in ("styles", "levels", "fonts", "font_scale"):
            setattr(self, name, tuple(getattr(self, name)))
        for name, value in (("image_size", self.image_size), ("page_scale", self.page_scale)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SynthDocConfig.{name} must be a positive int; got {value!r}")
        if self.image_size < 48:
            raise ValueError(f"SynthDocConfig.image_size must be >= 48 px; got {self.image_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SynthDocConfig.seed must be an int >= 0; got {self.seed!r}")
        for name, allowed in (("styles", STYLES), ("levels", LEVELS)):
            values = getattr(self, name)
            if not values or not set(values) <= set(allowed):
                raise ValueError(
                    f"SynthDocConfig.{name} must be a non-empty subset of {allowed}; got {values}"
                )
        if self.form_values not in FORM_KEYS:
            raise ValueError(
                f"SynthDocConfig.form_values must be one of {sorted(FORM_KEYS)}; "
                f"got {self.form_values!r}"
            )
        lo, hi = self.font_scale
        if not 0 < lo <= hi < 1:
            raise ValueError(f"font_scale must be (lo, hi) with 0 < lo <= hi < 1; got {(lo, hi)}")
        for name in ("noise_prob", "page_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"SynthDocConfig.{name} must be in [0, 1]; got {getattr(self, name)}"
                )
        if self.vocabulary is not None:
            self.vocabulary = list(self.vocabulary)
            bad = [
                w
                for w in self.vocabulary
                if not isinstance(w, str) or not w or w != w.strip() or any(c.isspace() for c in w)
            ]
            if not self.vocabulary or bad:
                raise ValueError(
                    f"SynthDocConfig.vocabulary must be a non-empty list of single words without "
                    f"spaces; bad entries: {bad[:5]}"
                )
        room = self.image_size - 2 * margin(self.image_size)
        for path in self.fonts or (None,):
            if too_wide := [
                w for w in self.words if text_width(w, self.min_font_size, path) > room
            ]:
                raise ValueError(
                    f"words {too_wide[:5]} do not fit a {self.image_size} px image even at "
                    f"min_font_size={self.min_font_size} (font {path or 'default'}); use a larger "
                    "image_size or shorter words"
                )

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.vocabulary) if self.vocabulary is not None else WORDS

"""Generate Amazon-Customer-Reviews-shaped raw data with a known best achievable accuracy.

Each review gets a star rating drawn from realistic marginals (about 62% five stars) and a
body whose sentiment sentences come from exactly one star level, the "text rating". With
probability ``label_noise`` the text rating is another level than the star rating, so a
classifier that reads the text perfectly scores ``1 - label_noise``: that ceiling is recorded
in the manifest. Bodies have HTML entities and ``<br />`` tags like the real files, and
malformed rows of each kind the ingest step quarantines can be injected on request.

Usage: ``python -m pipelines.generate --rows 20000 --output s3://bucket/raw/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.common.logs import configure_logging
from components.common.schema import RAW_COLUMNS, RAW_FILE_PATTERN, STAR_RATINGS

logger = logging.getLogger(__name__)

MANIFEST_NAME = "_generator_manifest.json"
# Share of each star rating in the full Amazon Customer Reviews Dataset (62% five stars).
STAR_MARGINALS = (0.08, 0.045, 0.075, 0.18, 0.62)
CATEGORIES = ("Digital_Software", "Mobile_Electronics", "Books", "Kitchen", "Toys", "Gift_Card")
MALFORMED_KINDS = (
    "field_count", "star_rating", "empty_body", "review_date", "votes", "encoding",
    "duplicate_review_id",
)  # fmt: skip

# Sentiment phrases per star level. No phrase is a substring of another level's phrase, so
# the level a body was written from can be read back exactly (see ``text_rating_of``).
PHRASES: dict[int, tuple[str, ...]] = {
    1: ("a complete waste of money", "broke after one day", "the worst purchase I ever made",
        "absolutely useless", "do not buy this", "a total scam", "it is garbage",
        "utterly horrible"),
    2: ("rather disappointing", "poor quality overall", "not worth the price",
        "below my expectations", "feels flimsy and cheap", "I regret buying it",
        "mostly a letdown", "too many problems"),
    3: ("just okay", "average at best", "mixed feelings about it", "nothing special",
        "decent enough for the price", "it is fine I guess", "neither good nor bad", "so-so"),
    4: ("pretty solid", "works well for me", "quite happy with it", "good value",
        "minor flaws but recommended", "does what it should", "a nice upgrade",
        "reliable so far"),
    5: ("absolutely love it", "simply perfect", "exceeded my expectations",
        "the best purchase ever", "fantastic quality", "highly recommend it to everyone",
        "amazing product", "flawless"),
}  # fmt: skip
_LOWER_PHRASES = {level: tuple(p.lower() for p in ps) for level, ps in PHRASES.items()}
HEADLINES: dict[int, tuple[str, ...]] = {
    1: ("One Star", "Terrible", "Avoid"),
    2: ("Two Stars", "Disappointed", "Meh, not great"),
    3: ("Three Stars", "It's ok", "Average"),
    4: ("Four Stars", "Good", "Pretty good"),
    5: ("Five Stars", "Love it!", "Excellent"),
}
OPENERS = ("Honestly,", "Overall,", "In short,", "To be honest,", "My verdict:", "So far,", "")
NOUNS = {
    "Digital_Software": ("software", "app", "license", "download", "program"),
    "Mobile_Electronics": ("charger", "speaker", "dash cam", "cable", "adapter"),
    "Books": ("book", "novel", "paperback", "story", "edition"),
    "Kitchen": ("pan", "blender", "knife set", "kettle", "mug"),
    "Toys": ("toy", "puzzle", "game", "doll", "playset"),
    "Gift_Card": ("gift card", "card", "eGift card", "gift", "voucher"),
}
NEUTRAL_TEMPLATES = (
    "I bought this {noun} for my {who}.", "The {noun} arrived on {day}.",
    "I have used the {noun} for {n} weeks now.", "It came in a {color} box.",
    "My {who} asked me about the {noun}.", "Shipping took {n} days.",
    "I ordered the {color} one.", "This is my {nth} {noun} from this seller.",
    "The &#34;{noun}&#34; was a gift for my {who}.", "Setup took about {n} minutes.",
)  # fmt: skip
WHO = ("son", "daughter", "wife", "husband", "mother", "father", "friend", "boss", "neighbor")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COLORS = ("black", "white", "red", "blue", "green", "silver", "gray")
NTH = ("first", "second", "third", "fourth")
_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate; every field is recorded in the manifest."""

    rows: int = 20_000
    seed: int = 42
    label_noise: float = 0.1
    categories: tuple[str, ...] = CATEGORIES
    malformed_per_kind: int = 0
    median_words: int = 26

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        if not 0.0 <= self.label_noise < 0.8:
            raise ValueError(f"label_noise must be in [0, 0.8), got {self.label_noise}")
        unknown = set(self.categories) - set(NOUNS)
        if unknown or not self.categories:
            raise ValueError(f"unknown categories {sorted(unknown)}; choose from {sorted(NOUNS)}")
        if self.malformed_per_kind < 0:
            raise ValueError("malformed_per_kind must be >= 0")


@dataclass
class Manifest:
    """What was generated: the truth the tests and the gate thresholds rely on."""

    config: dict
    files: dict[str, int] = field(default_factory=dict)
    rows_valid: int = 0
    star_counts: dict[str, int] = field(default_factory=dict)
    label_noise_realized: float = 0.0
    max_accuracy: float = 0.0
    max_accuracy_sentiment: float = 0.0
    malformed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _sentences(
    rng: np.random.Generator, level_phrases: tuple[str, ...], nouns: tuple[str, ...]
) -> list[str]:
    """Every sentiment sentence one star level can produce for one category."""
    out = []
    for phrase in level_phrases:
        for opener in OPENERS:
            text = f"{opener} {phrase}".strip()
            out.append(text[0].upper() + text[1:] + ".")
        for noun in nouns:
            out.append(f"{phrase[0].upper()}{phrase[1:]}, this {noun}.")
    rng.shuffle(out)
    return out


def _neutral(rng: np.random.Generator, nouns: tuple[str, ...], count: int = 400) -> list[str]:
    out = []
    for _ in range(count):
        template = NEUTRAL_TEMPLATES[rng.integers(len(NEUTRAL_TEMPLATES))]
        out.append(
            template.format(
                noun=nouns[rng.integers(len(nouns))], who=WHO[rng.integers(len(WHO))],
                day=DAYS[rng.integers(len(DAYS))], color=COLORS[rng.integers(len(COLORS))],
                nth=NTH[rng.integers(len(NTH))], n=int(rng.integers(2, 30)),
            )
        )  # fmt: skip
    return out


def text_rating_of(body: str) -> int | None:
    """The star level whose sentiment phrases a body contains (None if none or several)."""
    lowered = body.lower()
    found = {
        level for level, phrases in _LOWER_PHRASES.items() if any(p in lowered for p in phrases)
    }
    return found.pop() if len(found) == 1 else None


def _ids(rng: np.random.Generator, n: int, prefix: str, width: int) -> list[str]:
    """``n`` distinct ids: ``prefix`` + ``width`` base-36 characters."""
    space = 36**width
    while True:
        values = rng.integers(0, space, size=n, dtype=np.int64)
        if len(np.unique(values)) == n:
            break
    digits = (values[:, None] // (36 ** np.arange(width - 1, -1, -1, dtype=np.int64))) % 36
    chars = _ALPHABET[digits].view(f"S{width}").ravel()
    return [prefix + c.decode() for c in chars]


def _text_ratings(rng: np.random.Generator, stars: np.ndarray, noise: float) -> np.ndarray:
    """The level each body is written from: the star rating, or another level with ``noise``."""
    flip = rng.random(len(stars)) < noise
    shift = rng.integers(1, 5, size=len(stars))  # another level, uniformly among the other 4
    other = (stars - 1 + shift) % 5 + 1
    return np.where(flip, other, stars)


def _bodies(
    rng: np.random.Generator, text_ratings: np.ndarray, category: str, median_words: int
) -> list[str]:
    nouns = NOUNS[category]
    sentiment = {s: _sentences(rng, PHRASES[s], nouns) for s in STAR_RATINGS}
    neutral = _neutral(rng, nouns)
    n = len(text_ratings)
    # Review length is heavy-tailed; a sentence is about 7 words.
    words = np.clip(rng.lognormal(np.log(median_words), 0.8, n), 3, 600)
    n_sentences = np.maximum(1, np.rint(words / 7)).astype(int)
    n_sentiment = 1 + rng.binomial(n_sentences - 1, 0.25)
    total_neutral = int((n_sentences - n_sentiment).sum())
    neutral_pick = rng.integers(0, len(neutral), size=total_neutral)
    sentiment_pick = rng.integers(0, len(sentiment[1]), size=int(n_sentiment.sum()))
    positions = rng.random(n)
    use_br = rng.random(n) < 0.25
    bodies, ni, si = [], 0, 0
    for i in range(n):
        k_neutral = n_sentences[i] - n_sentiment[i]
        parts = [neutral[j] for j in neutral_pick[ni : ni + k_neutral]]
        ni += k_neutral
        pool = sentiment[int(text_ratings[i])]
        feel = [pool[j % len(pool)] for j in sentiment_pick[si : si + n_sentiment[i]]]
        si += n_sentiment[i]
        at = int(positions[i] * (len(parts) + 1))
        parts[at:at] = feel
        bodies.append(("<br /><br />" if use_br[i] else " ").join(parts))
    return bodies


def generate_rows(
    config: GeneratorConfig, rng: np.random.Generator, category: str, n: int
) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """``n`` valid rows of one category, with their star and text ratings."""
    stars = rng.choice(np.array(STAR_RATINGS), size=n, p=np.array(STAR_MARGINALS))
    text = _text_ratings(rng, stars, config.label_noise)
    bodies = _bodies(rng, text, category, config.median_words)
    review_ids = _ids(rng, n, "R", 12)
    product_ids = _ids(rng, max(1, n // 20 + 1), "B00", 7)
    product_pick = rng.integers(0, len(product_ids), size=n)
    customer = rng.integers(10_000_000, 53_000_000, size=n)
    total = np.where(rng.random(n) < 0.6, 0, rng.geometric(0.3, size=n))
    helpful = rng.binomial(total, 0.7)
    days = (rng.beta(5, 1.5, size=n) * 3894).astype(int)  # skewed towards 2015
    dates = (np.datetime64("2005-01-01") + days).astype(str)
    headline_pick = rng.integers(0, 3, size=n)
    vine = np.where(rng.random(n) < 0.01, "Y", "N")
    verified = np.where(rng.random(n) < 0.85, "Y", "N")
    nouns = NOUNS[category]
    rows = []
    for i in range(n):
        p = int(product_pick[i])
        rows.append([
            "US", str(customer[i]), review_ids[i], product_ids[p], str(100_000_000 + p * 7919),
            f"{category.replace('_', ' ')} {nouns[p % len(nouns)].title()} Model {p}", category,
            str(stars[i]), str(helpful[i]), str(total[i]), vine[i], verified[i],
            HEADLINES[int(text[i])][headline_pick[i]], bodies[i], dates[i],
        ])  # fmt: skip
    return rows, stars, text


def malformed_lines(
    rng: np.random.Generator, good: list[list[str]], per_kind: int
) -> list[tuple[str, bytes]]:
    """Rows that break exactly one ingest rule each, as raw bytes; ``good`` rows are templates."""
    out: list[tuple[str, bytes]] = []
    for kind in MALFORMED_KINDS:
        for j in range(per_kind):
            row = list(good[int(rng.integers(len(good)))])
            row[2] = f"RBAD{kind[:4].upper()}{j:06d}"
            if kind == "field_count":
                row = row[:-1]
            elif kind == "star_rating":
                row[7] = ("6", "0", "five", "4.5", "")[j % 5]
            elif kind == "empty_body":
                row[13] = ("", "   ", "\u3000 ")[j % 3]
            elif kind == "review_date":
                row[14] = ("2015-02-30", "31/08/2015", "yesterday", "")[j % 4]
            elif kind == "votes":
                row[8], row[9] = (("5", "2"), ("-1", "3"), ("0", "-4"))[j % 3]
            elif kind == "duplicate_review_id":
                row[2] = good[j % len(good)][2]
            line = "\t".join(row).encode()
            if kind == "encoding":
                line = (
                    "\t".join(row[:13]).encode()
                    + b"\t\xff\xfe broken \xc3("
                    + b"\t"
                    + row[14].encode()
                )
            out.append((kind, line))
    return out


def generate(config: GeneratorConfig, out_dir: Path) -> Manifest:
    """Write one gzipped TSV per category into ``out_dir`` and return the manifest."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    manifest = Manifest(config={**asdict(config), "categories": list(config.categories)})
    shares = rng.dirichlet(np.full(len(config.categories), 8.0))
    counts = np.floor(shares * config.rows).astype(int)
    counts[0] += config.rows - counts.sum()
    all_stars, all_text = [], []
    header = "\t".join(RAW_COLUMNS).encode() + b"\n"
    for index, (category, n) in enumerate(zip(config.categories, counts, strict=True)):
        rows, stars, text = generate_rows(config, rng, category, int(n))
        all_stars.append(stars)
        all_text.append(text)
        lines = [("valid", "\t".join(r).encode()) for r in rows]
        if index == 0 and config.malformed_per_kind:
            bad = malformed_lines(rng, rows, config.malformed_per_kind)
            lines.extend(bad)
            for kind, _ in bad:
                manifest.malformed[kind] = manifest.malformed.get(kind, 0) + 1
        name = RAW_FILE_PATTERN.format(category=category)
        with gzip.open(out_dir / name, "wb", compresslevel=3) as f:
            f.write(header)
            f.write(b"\n".join(line for _, line in lines) + b"\n")
        manifest.files[name] = len(lines)
    stars, text = np.concatenate(all_stars), np.concatenate(all_text)
    manifest.rows_valid = int(len(stars))
    manifest.star_counts = {str(s): int((stars == s).sum()) for s in STAR_RATINGS}
    manifest.label_noise_realized = float((stars != text).mean())
    manifest.max_accuracy = 1.0 - manifest.label_noise_realized
    sentiment = np.array([0, 0, 0, 1, 2, 2])
    manifest.max_accuracy_sentiment = float((sentiment[stars] == sentiment[text]).mean())
    manifest.seconds = round(time.perf_counter() - start, 3)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.generate", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="valid reviews to generate")
    parser.add_argument("--output", required=True, help="s3://bucket/prefix/ or a local directory")
    parser.add_argument("--seed", type=int, default=42, help="random seed (same seed, same files)")
    parser.add_argument(
        "--label-noise", type=float, default=0.1,
        help="share of reviews whose text was written for another star rating",
    )  # fmt: skip
    parser.add_argument(
        "--categories", nargs="+", default=list(CATEGORIES), choices=sorted(NOUNS),
        help="product categories, one file each",
    )  # fmt: skip
    parser.add_argument(
        "--malformed-per-kind", type=int, default=0,
        help=f"malformed rows to inject per kind ({', '.join(MALFORMED_KINDS)})",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        config = GeneratorConfig(
            rows=args.rows, seed=args.seed, label_noise=args.label_noise,
            categories=tuple(args.categories), malformed_per_kind=args.malformed_per_kind,
        )  # fmt: skip
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components.common.storage import S3Storage, is_s3_uri

    if is_s3_uri(args.output):
        with tempfile.TemporaryDirectory(prefix="reviews-") as tmp:
            manifest = generate(config, Path(tmp))
            S3Storage().upload_dir(tmp, args.output)
    else:
        manifest = generate(config, Path(args.output))
    logger.info(
        "generated %d valid rows (+%d malformed) in %.1fs into %s; max accuracy %.3f",
        manifest.rows_valid, sum(manifest.malformed.values()), manifest.seconds, args.output,
        manifest.max_accuracy,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pure DataFrame transforms of the ingest job: parse, quarantine, clean, label, balance, split.

Each function takes and returns a Spark DataFrame and is unit-tested on its own. Row order for
"keep the first duplicate" is the order the rows were read in (``_row_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from components.common.schema import RAW_COLUMNS

REJECT_REASONS = (
    "encoding",
    "field_count",
    "star_rating",
    "empty_body",
    "review_date",
    "votes",
    "duplicate_review_id",
)
OUTPUT_COLUMNS = (
    "review_id", "product_category", "review_body", "star_rating", "label", "review_date",
    "marketplace", "product_id", "helpful_votes", "total_votes", "vine", "verified_purchase",
)  # fmt: skip
SPLIT_NAMES = ("train", "validation", "test")
# Blank lines (e.g. a trailing empty line) are not rows: counted apart, never rejects.
BLANK = "_blank"
DUPLICATE = "duplicate_review_id"

# Whitespace, Unicode separators (e.g. U+3000) and control characters.
_ALL_BLANK = r"^[\s\p{Z}\p{Cc}]*$"


def clean_text_column(col: Column) -> Column:
    """The JVM twin of ``components.common.text.clean_text`` (no Python workers)."""
    br = r"(?i)<br\s*/?>"
    # The real files' common entity by plain replacement; the general decoder (Java
    # reflection, slow) runs only on bodies with another entity left.
    text = F.replace(F.regexp_replace(col, br, " "), F.lit("&#34;"), F.lit('"'))
    unescaped = F.call_function(
        "reflect", F.lit("org.apache.commons.text.StringEscapeUtils"), F.lit("unescapeHtml4"), text
    )
    # Only bodies with an entity pay for unescaping (and for tags that entities encoded).
    entity = text.rlike(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
    text = F.when(entity, F.regexp_replace(unescaped, br, " ")).otherwise(text)
    # One pass for control characters and whitespace runs.
    blank = r"(?U)[\s\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]+"
    return F.trim(F.regexp_replace(text, blank, " "))


def parse_lines(lines: DataFrame) -> DataFrame:
    """Split raw lines (``value``, ``source_file``, ``_row_id``) into the 15 string fields."""
    # Split once; the projection below reads the array (Spark keeps the two projects apart
    # rather than repeating a non-cheap expression per field).
    split = lines.select(
        "_row_id", "source_file", F.col("value").alias("raw_line"),
        F.split(F.col("value"), "\t", -1).alias("_parts"),
    )  # fmt: skip
    ok = F.size("_parts") == len(RAW_COLUMNS)
    fields = [F.when(ok, F.col("_parts")[i]).alias(name) for i, name in enumerate(RAW_COLUMNS)]
    return split.select(
        "_row_id", "source_file", "raw_line", F.size("_parts").alias("_n_fields"), *fields
    )


def _int_or_null(col: str) -> Column:
    return F.when(F.col(col).rlike(r"^-?[0-9]{1,9}$"), F.col(col).cast("int"))


def classify(
    parsed: DataFrame,
    text_fields: Sequence[str] = ("review_body",),
    clean: Callable[[Column], Column] = clean_text_column,
) -> DataFrame:
    """Add typed columns, the cleaned ``review_body`` and ``reason`` (null for a valid row).

    The first failing rule names the reason; duplicates are judged among otherwise valid rows,
    so the first valid occurrence of a review_id is kept. ``clean`` is ``clean_text_column`` or
    the job's JVM UDF (``udfs.clean_text_udf``), which gives the same text faster.
    """
    text = F.concat_ws(" ", *[F.coalesce(F.col(c), F.lit("")) for c in text_fields])
    star = _int_or_null("star_rating")
    helpful, total = _int_or_null("helpful_votes"), _int_or_null("total_votes")
    date = F.when(
        F.col("review_date").rlike(r"^\d{4}-\d{2}-\d{2}$"), F.to_date("review_date", "yyyy-MM-dd")
    )
    reason = (
        F.when(F.col("raw_line").rlike(r"^\s*$"), BLANK)
        .when(~F.is_valid_utf8(F.col("raw_line")), "encoding")
        .when(F.col("_n_fields") != len(RAW_COLUMNS), "field_count")
        .when(star.isNull() | ~star.between(1, 5), "star_rating")
        .when(F.col("review_body").rlike(_ALL_BLANK), "empty_body")
        .when(F.col("_clean_text") == "", "empty_body")
        .when(date.isNull(), "review_date")
        .when(
            helpful.isNull() | total.isNull() | (helpful < 0) | (total < 0) | (helpful > total),
            "votes",
        )
    )
    typed = (
        parsed.withColumn("_clean_text", clean(text))
        .withColumn("reason", reason)
        .withColumn("star_rating", star)
        .withColumn("helpful_votes", helpful)
        .withColumn("total_votes", total)
        .withColumn("review_date", date)
        .withColumn("review_body", F.col("_clean_text"))
        .drop("_clean_text")
    )
    return typed


def mark_duplicates(classified: DataFrame, broadcast_limit: int = 2_000_000) -> DataFrame:
    """Reject every valid row whose review_id appeared in an earlier valid row.

    Only (review_id, _row_id) of valid rows is shuffled, not the wide rows with their text.
    """
    valid = classified.filter(F.col("reason").isNull()).select("review_id", "_row_id")
    firsts = (
        valid.groupBy("review_id")
        .agg(F.min("_row_id").alias("_first"), F.count("*").alias("_n"))
        .filter(F.col("_n") > 1)
        .select("review_id", "_first")
    )
    n_groups = firsts.count()
    if n_groups == 0:
        return classified
    side = F.broadcast(firsts) if n_groups <= broadcast_limit else firsts
    joined = classified.join(side, "review_id", "left")
    dup = (
        F.col("reason").isNull()
        & F.col("_first").isNotNull()
        & (F.col("_row_id") != F.col("_first"))
    )
    return joined.withColumn(
        "reason", F.when(dup, F.lit(DUPLICATE)).otherwise(F.col("reason"))
    ).drop("_first")


def add_labels(df: DataFrame, star_to_label: Mapping[int, int]) -> DataFrame:
    """Add ``label`` from ``star_rating`` with the label map that travels with the data."""
    mapping = F.create_map(*[F.lit(x) for kv in sorted(star_to_label.items()) for x in kv])
    return df.withColumn("label", mapping[F.col("star_rating")].cast("int"))


def split_bounds(count: int, fractions: Sequence[float]) -> tuple[int, int]:
    """Rank cut-offs (train_end, validation_end) for ``count`` rows of one class.

    Validation and test get their rounded share, at least one row each once a class has three
    rows (so no split misses a class); train takes the rest.
    """
    floor = 1 if count >= 3 else 0
    validation = max(floor, int(round(count * fractions[1])))
    test = max(floor, int(round(count * fractions[2])))
    train = max(0, count - validation - test)
    return train, min(count, train + validation)


def normalized_text(col: Column) -> Column:
    """The text two reviews must share to count as the same: lower case, letters and digits.

    "Great!" and "great" are one text; the split and the dedupe key on this.
    """
    return F.trim(F.regexp_replace(F.lower(col), r"[^\p{L}\p{N}]+", " "))


def text_key(col: Column) -> Column:
    """``normalized_text``, or the trimmed text itself where nothing is left of it.

    A review of emoji or punctuation only ("👍", "!!!") normalizes to "": keyed on that, every
    such review would be one text with one label.
    """
    norm = normalized_text(col)
    return F.when(norm == "", F.concat(F.lit("\u0000"), F.trim(col))).otherwise(norm)


def _order_key(seed: int) -> Column:
    # By the text, not the review_id: identical texts always fall on the same side of a cut.
    return F.xxhash64(text_key(F.col("review_body")), F.lit(seed))


# Stated in stats.json: what a repeated text becomes.
DEDUPE_POLICY = (
    "rows whose normalized text repeats are kept once, with the label most of them carry; a "
    "tie goes to the lower label (the more negative star), and the earliest row read with "
    "that label is the one kept"
)


def dedupe_texts(df: DataFrame) -> DataFrame:
    """Keep each normalized ``review_body`` once, labelled by the majority of its rows.

    Adds nothing; drops the repeats. See ``DEDUPE_POLICY``; ``dedupe_counts`` counts them.
    """
    keyed = df.withColumn("_text_key", text_key(F.col("review_body")))
    votes = keyed.groupBy("_text_key", "label").agg(
        F.count("*").alias("_votes"), F.min("_row_id").alias("_first")
    )
    order = Window.partitionBy("_text_key").orderBy(F.col("_votes").desc(), F.col("label").asc())
    winners = (
        votes.withColumn("_pick", F.row_number().over(order))
        .filter(F.col("_pick") == 1)
        .select(F.col("_first").alias("_row_id"))
    )
    return keyed.join(winners, "_row_id", "left_semi").drop("_text_key")


def dedupe_counts(df: DataFrame) -> dict[str, int]:
    """Texts that repeat, rows that dedupe drops, and texts whose rows disagree on the label."""
    groups = df.groupBy(text_key(F.col("review_body")).alias("_t")).agg(
        F.count("*").alias("n"), F.countDistinct("label").alias("labels")
    )
    row = groups.agg(
        F.sum(F.when(F.col("n") > 1, 1).otherwise(0)).alias("repeated_texts"),
        F.sum(F.col("n") - 1).alias("rows_dropped"),
        F.sum(F.when(F.col("labels") > 1, 1).otherwise(0)).alias("conflicting_texts"),
        F.sum(F.when(F.col("labels") > 1, F.col("n")).otherwise(0)).alias("conflicting_rows"),
    ).first()
    return {k: int(row[k] or 0) for k in row.asDict()}


_KEY_MIN, _KEY_SPAN = -(2**63), 2**64


def key_bound(n: int, count: int, sigmas: float = 8.0) -> int | None:
    """An order-key value below which a class of ``count`` rows has its ``n`` smallest keys.

    The keys are a 64-bit hash, uniform over their range: the number of keys below the
    fraction ``q`` of the range is binomial(count, q). ``q`` sits ``sigmas`` standard
    deviations above n/count, so the bound falls short about never; ``split_cuts`` checks.
    None when the bound would keep every row anyway.
    """
    if count <= 0 or n >= count:
        return None
    p = n / count
    q = p + sigmas * (p * (1 - p) / count) ** 0.5 + 64 / count
    if q >= 1:
        return None
    return _KEY_MIN + int(q * _KEY_SPAN)


def split_cuts(
    df: DataFrame, class_counts: Mapping[int, int], fractions: Sequence[float], seed: int,
    balance: bool,
) -> dict[int, tuple[int | None, int | None, int | None]]:  # fmt: skip
    """Per class, the order-key values that end train, validation and the kept rows.

    Ranking happens on (label, key) only; the wide rows are then cut without a shuffle. When
    balancing keeps a few rows of a large class, only keys below ``key_bound`` are ranked (every
    smaller key is among them, so the ranks are exact); if a class comes up short, all its rows
    are ranked after all.
    """
    keep = min(class_counts.values()) if balance else None
    wanted: dict[int, tuple[int, int, int]] = {}
    for label, count in class_counts.items():
        n = keep if keep is not None else count
        train_end, val_end = split_bounds(n, fractions)
        wanted[label] = (train_end, val_end, n)
    bounds = {label: key_bound(n, class_counts[label]) for label, (_, _, n) in wanted.items()}
    at = _keys_at_ranks(df, wanted, bounds, seed)
    short = [label for label, (_, _, n) in wanted.items() if n > 0 and (label, n) not in at]
    if short:  # a bound fell short (or the counts are stale): rank those classes in full
        at.update(_keys_at_ranks(df, {k: wanted[k] for k in short}, dict.fromkeys(short), seed))
    return {
        label: tuple(at.get((label, r)) if r > 0 else None for r in triple)
        for label, triple in wanted.items()
    }


def _keys_at_ranks(
    df: DataFrame, wanted: Mapping[int, tuple[int, int, int]],
    bounds: Mapping[int, int | None], seed: int,
) -> dict[tuple[int, int], int]:  # fmt: skip
    ranks = sorted({r for triple in wanted.values() for r in triple if r > 0})
    narrow = df.select("label", _order_key(seed).alias("_key"))
    keep = None
    for label, bound in bounds.items():
        this = F.col("label") == label
        if bound is not None:
            this = this & (F.col("_key") <= F.lit(bound))
        keep = this if keep is None else keep | this
    if keep is not None:
        narrow = narrow.filter(keep)
    rank = F.row_number().over(Window.partitionBy("label").orderBy("_key"))
    rows = narrow.withColumn("_rank", rank).filter(F.col("_rank").isin(ranks)).collect()
    return {(r["label"], r["_rank"]): r["_key"] for r in rows}


def balance_and_split(
    df: DataFrame,
    class_counts: Mapping[int, int],
    fractions: Sequence[float],
    seed: int,
    balance: bool,
) -> DataFrame:
    """Undersample every class to the smallest (if ``balance``) and add a stratified ``split``.

    Rows are ordered within their class by a seeded 64-bit hash of review_id, so the result
    depends on the seed and the data only, never on partitioning.
    """
    cuts = split_cuts(df, class_counts, fractions, seed, balance)
    key = _order_key(seed)
    split = None
    for label, (train_key, val_key, keep_key) in cuts.items():
        this = F.col("label") == label
        case = None
        for cut, name in ((train_key, "train"), (val_key, "validation"), (keep_key, "test")):
            if cut is None:
                continue
            cond = this & (key <= F.lit(cut))
            case = F.when(cond, name) if case is None else case.when(cond, name)
        if case is not None:
            split = case if split is None else F.coalesce(split, case)
    return df.withColumn("split", split).filter(F.col("split").isNotNull())

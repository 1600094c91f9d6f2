"""Models for tests that need one served: small, random, built in a second, no downloads."""

from __future__ import annotations

from pathlib import Path


def tiny_model(path: Path) -> None:
    """A random small BERT with a WordPiece tokenizer, saved like the train step saves it."""
    import json

    from components.common.inference import LABEL_MAP_FILE
    from components.common.schema import label_map_for
    from components.train.data import train_wordpiece
    from components.train.model import build_small_bert

    texts = ["great card works fine", "never arrived, waste of money", "okay gift for a friend"]
    tokenizer = train_wordpiece(texts * 20, 200, 64)
    label_map = label_map_for("star_rating")
    model = build_small_bert(len(tokenizer), 1, 32, 2, label_map,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / LABEL_MAP_FILE).write_text(json.dumps({**label_map.to_dict(), "max_seq_length": 64}))

"""The classifier: Hugging Face BertForSequenceClassification with SDPA attention."""

from __future__ import annotations

import logging

from components.common.errors import ModelLoadError
from components.common.schema import LabelMap

logger = logging.getLogger(__name__)


def label_config(label_map: LabelMap) -> dict:
    """``num_labels``, ``id2label`` (star ratings as names) and ``label2id`` for the config."""
    return {
        "num_labels": label_map.num_labels,
        "id2label": dict(label_map.id2label),
        "label2id": label_map.label2id,
    }


def build_small_bert(
    vocab_size: int, num_layers: int, hidden_size: int, num_heads: int, label_map: LabelMap,
    max_positions: int = 512, pad_token_id: int = 0,
) -> object:  # fmt: skip
    """A randomly initialised BERT of the given shape (the offline default)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions, pad_token_id=pad_token_id,
        **label_config(label_map),
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    return BertForSequenceClassification(config)


def load_pretrained(name_or_path: str, label_map: LabelMap) -> tuple[object, object]:
    """Tokenizer and classifier from a save_pretrained directory or a hub id."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = BertForSequenceClassification.from_pretrained(
            name_or_path, attn_implementation="sdpa", ignore_mismatched_sizes=True,
            **label_config(label_map),
        )  # fmt: skip
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a BERT from {name_or_path!r}: {e}") from e
    return tokenizer, model

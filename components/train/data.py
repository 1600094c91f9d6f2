"""Training data: Parquet splits, the tokenizer, tokenize-once datasets and batching."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from components.common.errors import InvalidInput, StorageError
from components.common.storage import S3Storage, is_s3_uri

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def fetch_dir(uri: str, local: Path) -> Path:
    """A local directory with the contents of ``uri`` (downloaded once if it is on S3)."""
    if not is_s3_uri(uri):
        return Path(uri)
    marker = local / ".complete"
    if not marker.exists():
        if not S3Storage().download_prefix(uri, local):
            raise StorageError(f"{uri} holds no objects")
        marker.touch()
    return local


def read_split(data_dir: Path, split: str, max_rows: int = 0) -> pd.DataFrame:
    """One split's ``review_body`` and ``label`` columns."""
    import pandas as pd  # here: the GPU check imports the trainer without pandas

    path = data_dir / split
    if not path.exists():
        raise InvalidInput(f"{path} does not exist: expected the ingest step's {split}/ Parquet")
    df = pd.read_parquet(path, columns=["review_body", "label"])
    if df.empty:
        raise InvalidInput(f"{path} has no rows")
    if max_rows and len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=0).sort_index()
    return df.reset_index(drop=True)


def train_wordpiece(texts: list[str], vocab_size: int, max_length: int) -> object:
    """A BERT-style uncased WordPiece tokenizer trained on ``texts`` (the offline default)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )  # fmt: skip
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length,
    )  # fmt: skip


class TokenizedDataset(Dataset):
    """Reviews tokenized once (batched, fast tokenizer, truncated, unpadded)."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer: object, max_length: int):
        encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = [int(x) for x in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.input_ids[index], self.labels[index]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


class PadCollator:
    """Pads each batch to its own longest review (dynamic padding)."""

    def __init__(self, pad_id: int, multiple_of: int = 8) -> None:
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def width(self, longest: int) -> int:
        """Padded length of a batch whose longest review has ``longest`` tokens."""
        return int(math.ceil(longest / self.multiple_of) * self.multiple_of)

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = self.width(max(len(ids) for ids, _ in batch))
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (tokens, _) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        labels = torch.tensor([label for _, label in batch], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ShardedSampler(Sampler[int]):
    """Each rank's share of a seeded per-epoch permutation, optionally grouped by length.

    Like DistributedSampler (padding to equal shard sizes so ranks step together), plus
    HF-style length grouping: shuffle, cut into mega-batches, sort each by length.
    """

    def __init__(
        self,
        lengths: list[int],
        rank: int,
        world_size: int,
        seed: int,
        batch_size: int,
        group_by_length: bool = False,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.epoch = 0
        self.per_rank = int(math.ceil(len(lengths) / world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        total = self.per_rank * self.world_size
        order = np.concatenate([order, order[: total - len(order)]])
        if self.group_by_length:
            mega = self.batch_size * self.world_size * 50
            chunks = [order[i : i + mega] for i in range(0, total, mega)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
            # Whole global batches stay together; ranks take interleaved rows of each.
        return iter(order[self.rank : total : self.world_size].tolist())


def eval_shard(n: int, rank: int, world_size: int) -> list[int]:
    """Evaluation rows of one rank: disjoint, no padding, so every row counts once."""
    return list(range(rank, n, world_size))

"""Ingest: raw review TSV on S3 to clean, labelled, balanced, split Parquet."""

from components.ingest.config import IngestConfig
from components.ingest.job import run_ingest

__all__ = ["IngestConfig", "run_ingest"]

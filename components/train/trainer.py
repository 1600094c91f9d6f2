"""The training loop: DDP, accumulation, clipping, mixed precision, checkpoints, MLflow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from components.common.inference import LABEL_MAP_FILE
from components.common.schema import LabelMap
from components.common.storage import S3Storage, is_s3_uri
from components.train import distributed as du
from components.train.budget import plan_steps
from components.train.checkpoint import CheckpointStore
from components.train.config import TrainConfig
from components.train.data import (
    PadCollator,
    ShardedSampler,
    TokenizedDataset,
    fetch_dir,
    read_split,
    train_wordpiece,
)
from components.train.evaluation import evaluate as evaluate_split
from components.train.labels import class_weights, load_label_map
from components.train.model import build_small_bert, load_pretrained
from components.train.precision import autocast as autocast_for
from components.train.precision import resolve_precision
from components.train.pretrained import is_scratch, resolve_pretrained
from components.train.resume import (
    TrainState,
    loader_generator,
    restore_checkpoint,
    save_checkpoint,
    seed_everything,
    unwrap,
)

logger = logging.getLogger(__name__)


def _steady() -> dict:
    return {"steps": 0, "seconds": 0.0, "samples": 0}


def _window() -> dict:
    return {"done": 0, "samples": 0, "since": time.perf_counter()}


@dataclass
class Loop:
    """What one attempt's training loop works on (built by ``Trainer.run``), and its counters.

    ``steady``: optimizer steps after the first log window, evaluation and checkpoint time
    excluded (what benchmarks/train.py compares); ``window``: the current log window.
    """

    model: torch.nn.Module
    loader: DataLoader
    sampler: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    val_ds: TokenizedDataset
    micro: int
    total_steps: int
    eval_every: int
    mlflow: Any
    steady: dict = field(default_factory=_steady)
    window: dict = field(default_factory=_window)


class Trainer:
    """One training run; ``run()`` returns the results that also go to results.json."""

    def __init__(self, config: TrainConfig) -> None:
        self.cfg = config
        self.ctx = du.init_distributed()
        seed_everything(config.seed + self.ctx.rank)
        self.work = Path(tempfile.mkdtemp(prefix=f"rc-train-r{self.ctx.rank}-"))
        self.store = CheckpointStore(config.checkpoint_uri, config.run_id)
        self.precision = resolve_precision(config.precision, self.ctx.device)
        self.state = TrainState()
        self.loss_fn: torch.nn.Module | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None  # on rank 0
        self.num_labels = 0  # set by run() from the data's label map
        self.collate: PadCollator | None = None  # set by run() from the tokenizer

    # ---- set-up -------------------------------------------------------------------------
    def _tokenizer_and_model(self, label_map: LabelMap, train_texts: list[str]) -> tuple:
        cfg, ctx = self.cfg, self.ctx
        if not is_scratch(cfg.model_name_or_path):
            shared = Path(tempfile.gettempdir()) / f"rc-model-{cfg.run_id}"
            if ctx.local_rank == 0:
                resolve_pretrained(cfg.model_name_or_path, shared)  # downloaded once per node
            du.barrier(ctx)
            return load_pretrained(resolve_pretrained(cfg.model_name_or_path, shared), label_map)
        if ctx.is_main and not self.store.has_tokenizer():
            logger.info("training a WordPiece tokenizer (vocab %d) on %d reviews",
                        cfg.vocab_size, len(train_texts))  # fmt: skip
            self.store.save_tokenizer(
                train_wordpiece(train_texts, cfg.vocab_size, cfg.max_seq_length)
            )
        du.barrier(ctx)
        tokenizer = self.store.load_tokenizer(self.work / "tokenizer")
        model = build_small_bert(
            len(tokenizer), cfg.num_layers, cfg.hidden_size, cfg.num_heads, label_map,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        return tokenizer, model

    def _loader(self, dataset: TokenizedDataset, micro_batch: int) -> tuple[DataLoader, Any]:
        sampler = ShardedSampler(
            dataset.lengths, self.ctx.rank, self.ctx.world_size, self.cfg.seed, micro_batch,
            self.cfg.group_by_length,
        )  # fmt: skip
        # A generator of its own: without one, every iter() over the loader draws its worker
        # seed from the global RNG, and a run resumed mid-epoch would draw once more than an
        # uninterrupted one, shifting every dropout mask after it (exact resume would break).
        loader = DataLoader(
            dataset, batch_size=micro_batch, sampler=sampler, drop_last=True,
            collate_fn=self.collate, num_workers=self.cfg.num_workers,
            pin_memory=self.ctx.device.type == "cuda", generator=loader_generator(self.cfg.seed),
        )  # fmt: skip
        return loader, sampler

    def _optimizer(self, model: torch.nn.Module, total_steps: int) -> tuple:
        from transformers import get_linear_schedule_with_warmup

        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # The fused kernel (one pass over all parameters) exists on CUDA and, since torch 2.4,
        # on CPU; it is what the HF Trainer's default optimizer (adamw_torch_fused) uses too.
        fused = self.ctx.device.type in ("cuda", "cpu")
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.learning_rate, fused=fused)
        warmup = int(total_steps * self.cfg.warmup_ratio)
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)

    # ---- evaluation and checkpoints (components/train/evaluation.py, resume.py) ----------
    def evaluate(self, model: torch.nn.Module, dataset: TokenizedDataset, batch: int) -> dict:
        """Loss, accuracy and macro-F1 on ``dataset``, reduced over every rank."""
        return evaluate_split(model, dataset, batch, self.ctx, self.collate, self.num_labels,
                              self.precision, self.cfg.seed)  # fmt: skip

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.precision, self.ctx.device)

    def _checkpoint(self, model, optimizer, scheduler, scaler) -> None:  # noqa: ANN001
        save_checkpoint(self.store, self.ctx, self.cfg, self.state, self.best_weights, model,
                        optimizer, scheduler, scaler)  # fmt: skip

    def _resume(self, model, optimizer, scheduler, scaler) -> int | None:  # noqa: ANN001
        restored = restore_checkpoint(self.store, self.ctx, model, optimizer, scheduler, scaler)
        if restored is None:
            return None
        step, self.state, best_weights = restored
        if best_weights is not None:
            self.best_weights = best_weights
        return step

    # ---- MLflow -------------------------------------------------------------------------
    def _mlflow_start(self, params: dict) -> Any:
        if not (self.cfg.mlflow and self.ctx.is_main):
            return None
        import mlflow

        from components.common.settings import Settings
        from components.common.tracking import start_stage_run

        # a resumed checkpoint's run, else the run KFP made for this task, else a new one
        run = start_stage_run(self.cfg.run_id, self.cfg.experiment, self.state.mlflow_run_id)
        if self.state.mlflow_run_id is None:
            mlflow.log_params(params)
            # code_version: the image tag these pods run (IMAGE_TAG from the platform ConfigMap)
            mlflow.set_tags({"run_id": self.cfg.run_id, "stage": "train",
                             "code_version": Settings.from_env().image_tag})  # fmt: skip
        self.state.mlflow_run_id = run.info.run_id
        return mlflow

    # ---- the run ------------------------------------------------------------------------
    def _read_data(self) -> tuple[LabelMap, Any, Any]:
        """The label map and the train and validation splits (``review_body``, ``label``)."""
        data_dir = fetch_dir(self.cfg.data, self.work / "data")
        label_map = load_label_map(data_dir)
        train_df = read_split(data_dir, "train")
        return label_map, train_df, read_split(data_dir, "validation", self.cfg.max_eval_rows)

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        t0 = time.perf_counter()
        label_map, train_df, val_df = self._read_data()
        self.num_labels = label_map.num_labels
        tokenizer, model = self._tokenizer_and_model(label_map, train_df["review_body"].tolist())
        self.collate = PadCollator(tokenizer.pad_token_id)
        if cfg.class_weighting != "none":
            weights = class_weights(list(train_df["label"]), self.num_labels, cfg.class_weighting)
            logger.info("class weights (%s): %s", cfg.class_weighting,
                        [round(w, 3) for w in weights])  # fmt: skip
            self.loss_fn = torch.nn.CrossEntropyLoss(
                weight=torch.tensor(weights, dtype=torch.float32, device=ctx.device)
            )
        train_ds = TokenizedDataset(train_df["review_body"].tolist(), train_df["label"].tolist(),
                                    tokenizer, cfg.max_seq_length)  # fmt: skip
        val_ds = TokenizedDataset(val_df["review_body"].tolist(), val_df["label"].tolist(),
                                  tokenizer, cfg.max_seq_length)  # fmt: skip
        micro = cfg.batch_size // (ctx.world_size * cfg.grad_accum)
        if micro < 1:
            raise ValueError(
                f"batch_size {cfg.batch_size} is smaller than world size x grad_accum "
                f"({ctx.world_size} x {cfg.grad_accum})"
            )
        loader, sampler = self._loader(train_ds, micro)
        steps_per_epoch = len(loader) // cfg.grad_accum
        if steps_per_epoch < 1:
            raise ValueError(
                f"{len(train_ds)} training rows make no full batch of {cfg.batch_size}"
            )
        plan = plan_steps(
            len(train_ds), micro * ctx.world_size * cfg.grad_accum, steps_per_epoch,
            max_steps=cfg.max_steps, epochs=cfg.epochs, passes=cfg.budget_passes,
            floor=cfg.min_examples, ceiling=cfg.max_examples, evaluations=cfg.evaluations,
            eval_every=cfg.eval_every,
        )  # fmt: skip
        total_steps = plan.total_steps
        model.to(ctx.device)
        optimizer, scheduler = self._optimizer(model, total_steps)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        resumed_from = self._resume(model, optimizer, scheduler, scaler)
        if cfg.compile:
            model = torch.compile(model)
        if ctx.distributed:
            model = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
        params = {**asdict(cfg), "world_size": ctx.world_size, "precision": self.precision,
                  "train_rows": len(train_ds), "val_rows": len(val_ds), "micro_batch": micro,
                  "total_steps": total_steps, "eval_every": plan.eval_every}  # fmt: skip
        mlflow = self._mlflow_start(params)
        logger.info(
            "training: %d train / %d val rows, %d labels, world %d, micro-batch %d x accum %d = "
            "%d, %s (%d steps/epoch), precision %s, device %s%s",
            len(train_ds), len(val_ds), self.num_labels, ctx.world_size, micro, cfg.grad_accum,
            micro * ctx.world_size * cfg.grad_accum, plan.describe(), steps_per_epoch,
            self.precision, ctx.device,
            f", resuming at step {resumed_from}" if resumed_from is not None else "",
        )  # fmt: skip
        loop = Loop(model, loader, sampler, optimizer, scheduler, scaler, val_ds, micro,
                    total_steps, plan.eval_every, mlflow)  # fmt: skip
        steps_this_attempt = self._loop(loop)
        final = (
            self.state.history[-1] if self.state.history else self.evaluate(model, val_ds, micro)
        )
        results = {
            "run_id": cfg.run_id,
            "mlflow_run_id": self.state.mlflow_run_id,
            "steps": self.state.step,
            "total_steps": total_steps,
            "budget": plan.rule,
            "examples_per_step": micro * ctx.world_size * cfg.grad_accum,
            "eval_every": plan.eval_every,
            "train_rows": len(train_ds),
            "early_stopped": self.state.step < total_steps,
            "learning_rate": cfg.learning_rate,
            "class_weighting": cfg.class_weighting,
            "resumed_from_step": resumed_from,
            "steps_this_attempt": steps_this_attempt,
            "selection_metric": cfg.selection_metric,
            "best_step": self.state.best_step,
            "best_val_metric": self.state.best_score,
            "best_val_accuracy": self._best_eval().get("val_accuracy"),
            "final": final,
            "history": self.state.history,
            "world_size": ctx.world_size,
            "seconds": round(time.perf_counter() - t0, 2),
            "steady_samples_per_s": (
                loop.steady["samples"] / loop.steady["seconds"] if loop.steady["seconds"] else None
            ),
            "steady_steps": loop.steady["steps"],
        }
        if ctx.is_main:
            self._save_final(model, tokenizer, label_map, results, mlflow)
        du.barrier(ctx)
        du.shutdown(ctx)
        return results

    def _loop(self, loop: Loop) -> int:
        """Train epoch after epoch until ``total_steps`` or early stopping; returns steps done."""
        st = self.state
        loop.model.train()
        while st.step < loop.total_steps:
            epoch_done, stop = self._train_epoch(loop)
            if epoch_done:  # a full pass over the data
                st.epoch += 1
                st.batches_done_in_epoch = 0
                if not loop.eval_every:
                    stop = self._after_eval(loop)
                self._checkpoint(loop.model, loop.optimizer, loop.scheduler, loop.scaler)
            if stop:
                break
        if not st.history or st.history[-1]["step"] != st.step:
            self._after_eval(loop)
        if self.store.latest() != st.step:
            # The last step rarely falls on an interval or an epoch end (one epoch of max_steps
            # returns before it): without this a finished run would leave nothing to resume.
            self._checkpoint(loop.model, loop.optimizer, loop.scheduler, loop.scaler)
        return loop.window["done"]

    def _train_epoch(self, loop: Loop) -> tuple[bool, bool]:
        """The rest of the current epoch: (the epoch ended, training should stop)."""
        model, scaler = loop.model, loop.scaler
        cfg, ctx, st = self.cfg, self.ctx, self.state
        loop.sampler.set_epoch(st.epoch)
        skip = st.batches_done_in_epoch * cfg.grad_accum  # micro-batches already trained
        # The loss stays on the device between log steps: no host sync per step.
        accum_loss = torch.zeros((), device=ctx.device)
        t_step = time.perf_counter()
        for index, batch in enumerate(loop.loader):
            if index < skip:
                continue
            batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            last_micro = (index + 1) % cfg.grad_accum == 0
            sync = (
                contextlib.nullcontext() if last_micro or not ctx.distributed else model.no_sync()
            )
            with sync:
                with self.autocast():
                    loss = self._loss(model, batch) / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
            accum_loss += loss.detach()
            if not last_micro:
                continue
            self._optimizer_step(model, loop.optimizer, loop.scheduler, scaler)
            self._account_step(loop, t_step, accum_loss)
            accum_loss = torch.zeros((), device=ctx.device)
            stop = False
            if loop.eval_every and st.step % loop.eval_every == 0:
                stop = self._after_eval(loop)
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                self._checkpoint(model, loop.optimizer, loop.scheduler, scaler)
            t_step = time.perf_counter()
            if stop or st.step >= loop.total_steps:
                return False, True
        return True, False

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's own cross-entropy, or the class-weighted one."""
        if self.loss_fn is None:
            return model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return self.loss_fn(logits.float(), batch["labels"])

    def _best_eval(self) -> dict:
        return next((h for h in self.state.history if h["step"] == self.state.best_step), {})

    def _optimizer_step(self, model, optimizer, scheduler, scaler) -> None:
        """Unscale, clip, step the optimizer and the schedule, clear the gradients."""
        if scaler:
            scaler.unscale_(optimizer)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def _account_step(self, loop: Loop, t_step: float, accum_loss: torch.Tensor) -> None:
        """Count the step; every ``log_every`` steps log loss, learning rate and throughput."""
        cfg, ctx, st, window = self.cfg, self.ctx, self.state, loop.window
        total_steps, mlflow = loop.total_steps, loop.mlflow
        st.step += 1
        st.batches_done_in_epoch += 1
        window["done"] += 1
        samples = loop.micro * cfg.grad_accum * ctx.world_size
        if window["done"] > cfg.log_every:
            loop.steady["steps"] += 1
            loop.steady["seconds"] += time.perf_counter() - t_step
            loop.steady["samples"] += samples
        window["samples"] += samples
        if st.step % cfg.log_every and st.step != total_steps:
            return
        elapsed = time.perf_counter() - window["since"]
        loss = du.all_reduce_sum(accum_loss.reshape(1).float(), ctx).item() / ctx.world_size
        rate = window["samples"] / max(elapsed, 1e-9)
        if ctx.is_main:
            lr = loop.scheduler.get_last_lr()[0]
            logger.info("step %d/%d loss %.4f lr %.2e %.0f samples/s", st.step, total_steps,
                        loss, lr, rate)  # fmt: skip
            if mlflow:
                mlflow.log_metrics({"train_loss": loss, "learning_rate": lr, "samples_per_s": rate},
                                   step=st.step)  # fmt: skip
        window["samples"], window["since"] = 0, time.perf_counter()

    def _after_eval(self, loop: Loop) -> bool:
        """Evaluate, log, track the best model; True when early stopping says stop."""
        st, cfg, model, mlflow = self.state, self.cfg, loop.model, loop.mlflow
        metrics = {**self.evaluate(model, loop.val_ds, loop.micro), "step": st.step,
                   "epoch": st.epoch}  # fmt: skip
        st.history.append(metrics)
        if self.ctx.is_main:
            logger.info(
                "eval step %d: %s",
                st.step,
                {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")},
            )
            if mlflow:
                mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("val_")},
                                   step=st.step)  # fmt: skip
        score = metrics[f"val_{cfg.selection_metric}"]
        # Any gain keeps the weights; only a gain of min_delta resets the patience, so a
        # saturated metric (ups and downs in the noise) stops the run.
        gain = score - st.best_score
        if gain >= cfg.early_stopping_min_delta or st.best_step < 0:
            st.evals_without_improvement = 0
        else:
            st.evals_without_improvement += 1
        if gain > 0:
            st.best_score, st.best_step = score, st.step
            if self.ctx.is_main:
                self.best_weights = {k: v.detach().cpu().clone()
                                     for k, v in unwrap(model).state_dict().items()}  # fmt: skip
        patience = cfg.early_stopping_patience
        return bool(patience and st.evals_without_improvement >= patience)

    def _save_final(self, model, tokenizer, label_map: LabelMap, results: dict, mlflow) -> None:
        """The final model and results.json in ``output_dir``, a directory or an s3:// prefix.

        On S3 (the pods of a multi-node job share no disk) the model is written here first,
        then uploaded with results.json last: its presence means the rest is complete.
        """
        remote = is_s3_uri(self.cfg.output_dir)
        out = self.work / "output" if remote else Path(self.cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        final = unwrap(model)
        best = self.best_weights
        if best is not None:
            final.load_state_dict(best)  # early stopping keeps the best evaluation's weights
        final.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / LABEL_MAP_FILE).write_text(
            json.dumps({**label_map.to_dict(), "max_seq_length": self.cfg.max_seq_length}, indent=2)
        )
        if mlflow:
            from components.train.mlflow_model import log_model

            info = log_model(out)
            results["mlflow_model_uri"] = info.model_uri
            mlflow.log_metrics({"best_val_metric": self.state.best_score,
                                "best_val_accuracy": results["best_val_accuracy"],
                                "train_seconds": results["seconds"]})  # fmt: skip
            mlflow.log_dict(results, "results.json")
            mlflow.end_run()
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if remote:
            storage, prefix = S3Storage(), self.cfg.output_dir.rstrip("/")
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                if path.name != "results.json":
                    storage.upload_file(path, f"{prefix}/{path.relative_to(out).as_posix()}")
            storage.upload_file(out / "results.json", f"{prefix}/results.json")
            logger.info("final model and results.json uploaded to %s", prefix)


def run_training(config: TrainConfig) -> dict:
    return Trainer(config).run()


def main(argv: list[str] | None = None) -> int:
    import sys

    from components.common.errors import PlatformError
    from components.common.logs import configure_logging
    from components.train.config import parse_args

    configure_logging(rank=int(os.environ.get("RANK", "0")))
    try:
        results = run_training(parse_args(argv))
    except (PlatformError, ValueError) as e:
        print(f"train failed: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: results[k] for k in ("steps", "best_val_accuracy", "mlflow_run_id")}))
    return 0

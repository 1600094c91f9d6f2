"""The deployment gate: absolute floor, margin over the baseline, no regression vs champion."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateConfig:
    """Thresholds; the accuracy floor suits 5 balanced classes (chance is 0.2)."""

    min_accuracy: float = 0.45
    min_gain_over_baseline: float = 0.0
    max_regression: float = 0.01


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self) -> str:
        if self.passed:
            return "gate passed: " + "; ".join(c.detail for c in self.checks)
        return "gate failed: " + "; ".join(c.detail for c in self.failed)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def decide(
    accuracy: float, baseline_accuracy: float, champion_accuracy: float | None, cfg: GateConfig
) -> Decision:
    """Every condition with the figures it compared; all must hold."""
    need_base = baseline_accuracy + cfg.min_gain_over_baseline
    checks = [
        Check("min_accuracy", accuracy >= cfg.min_accuracy, accuracy, cfg.min_accuracy,
              f"accuracy {accuracy:.4f} {'>=' if accuracy >= cfg.min_accuracy else '<'} "
              f"min_accuracy {cfg.min_accuracy:.4f}"),
        Check("beats_baseline", accuracy >= need_base, accuracy, need_base,
              f"accuracy {accuracy:.4f} {'>=' if accuracy >= need_base else '<'} baseline "
              f"{baseline_accuracy:.4f} + min_gain {cfg.min_gain_over_baseline:+.4f}"),
    ]  # fmt: skip
    if champion_accuracy is not None:
        need = champion_accuracy - cfg.max_regression
        checks.append(
            Check("no_regression_vs_champion", accuracy >= need, accuracy, need,
                  f"accuracy {accuracy:.4f} {'>=' if accuracy >= need else '<'} champion "
                  f"{champion_accuracy:.4f} - max_regression {cfg.max_regression:.4f}")
        )  # fmt: skip
    return Decision(all(c.passed for c in checks), checks)

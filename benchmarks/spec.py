"""The vocabulary of the harness: metrics, frameworks, workloads and one sample.

A *workload* is one thing to measure (e.g. ``tiny_map``); a *framework* is one
library's way of doing it, with that library's default options unless its label says
otherwise. Keeping these as plain frozen data lets the driver plan runs and the report
label columns without importing any pool library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "WORKERS",
    "Calibrator",
    "Deriver",
    "Framework",
    "Metric",
    "Role",
    "Runner",
    "Sample",
    "Workload",
]

# Every pool in every workload gets this many workers, unless a workload says otherwise.
WORKERS = 2

# "workpool" is the subject, "peer" a competitor, "reference" a yardstick (serial, ideal)
# that is shown but never counted as the best peer.
Role = Literal["workpool", "peer", "reference"]


@dataclass(frozen=True)
class Metric:
    """One number a sample reports, and how to show it."""

    key: str
    label: str
    better: Literal["higher", "lower"]
    fmt: str = "{:.3g}"
    ratio: bool = False  # for extra metrics: also show a ratio to the best peer

    def format(self, value: float | None) -> str:
        """The value for a table cell; a dash when it is missing."""
        return "-" if value is None else self.fmt.format(value)


@dataclass(frozen=True)
class Sample:
    """What one measurement in a fresh process returns: numbers and context."""

    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[Mapping[str, Any]], Sample]

# Adds metrics that need several frameworks' samples (e.g. efficiency against serial):
# called with {framework key: [metrics of each successful sample]} and the run's context
# (calibration results), it adds keys to those metric dicts in place.
Deriver = Callable[[dict[str, list[dict[str, float]]], Mapping[str, Any]], None]

# Runs once per benchmark run, in the driver, before any measurement of the workload;
# the parameters it returns are added to every measurement's (e.g. a calibrated count).
Calibrator = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Framework:
    """One library's way of doing a workload.

    ``needs`` names the importable modules it cannot run without (a missing one skips
    it); ``quick`` overrides workload parameters in ``--quick`` mode.
    """

    key: str
    label: str
    run: Runner
    role: Role = "peer"
    needs: tuple[str, ...] = ()
    quick: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """A thing to measure, the parameters it runs with, and who competes at it."""

    name: str
    summary: str
    primary: Metric
    frameworks: tuple[Framework, ...]
    extras: tuple[Metric, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    quick_params: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    derive: Deriver | None = None
    calibrate: Calibrator | None = None

    def framework(self, key: str) -> Framework:
        """The framework called ``key``; ``KeyError`` names the valid ones."""
        for framework in self.frameworks:
            if framework.key == key:
                return framework
        known = ", ".join(f.key for f in self.frameworks)
        raise KeyError(f"workload {self.name!r} has no framework {key!r} (known: {known})")

    def params_for(self, framework: Framework, *, quick: bool) -> dict[str, Any]:
        """The parameters one run of ``framework`` gets, quick-mode overrides applied."""
        params = dict(self.params)
        if quick:
            params.update(self.quick_params)
            params.update(framework.quick)
        return params

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.primary, *self.extras)

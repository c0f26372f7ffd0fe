"""The checks, registered by name, in the order `check` runs them.

This registry must not import torch (`nndoctor codes` reads it): each check
lives in its own module, imported only when the check runs. A check module
defines:

    DEFAULTS: dict            # its settings (nndoctor.yaml section, CLI options)
    def run(session, settings) -> Outcome

and raises `engine.Skip("reason")` when it lacks what it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckInfo:
    name: str
    module: str
    title: str
    needs: str = ""  # "", "data" (a train loader) or "val" (a validation loader too)


@dataclass
class Outcome:
    """What a check returns: its findings, metrics, and top-level report sections."""

    findings: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)  # e.g. {"size": {...}} (SPEC §4)


CHECKS = {c.name: c for c in [
    CheckInfo("size", "nndoctor.checks.size", "Parameters, size and compute"),
    CheckInfo("data", "nndoctor.checks.data", "Data sanity", needs="data"),
    CheckInfo("static", "nndoctor.checks.static", "Setup before the first step", needs="data"),
    CheckInfo("init", "nndoctor.checks.init", "Initialisation", needs="data"),
    CheckInfo("nan", "nndoctor.checks.nan", "NaN/Inf", needs="data"),
    CheckInfo("grads", "nndoctor.checks.grads", "Gradients", needs="data"),
    CheckInfo("dead", "nndoctor.checks.dead", "Dead and saturated units", needs="data"),
    CheckInfo("overfit", "nndoctor.checks.overfit", "Overfit one batch", needs="data"),
    CheckInfo("lr-find", "nndoctor.checks.lr_find", "LR range test", needs="data"),
    CheckInfo("fit", "nndoctor.checks.fit", "Over/underfitting", needs="val"),
]}


def load(name: str):
    """The module implementing check `name`."""
    return importlib.import_module(CHECKS[name].module)


def defaults(name: str) -> dict:
    return dict(getattr(load(name), "DEFAULTS", {}))

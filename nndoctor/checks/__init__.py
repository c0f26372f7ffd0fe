"""The checks, registered by name, in the order `check` runs them.

This registry must not import torch (`nndoctor codes` and `--help` read it):
each check lives in its own module, imported only when the check runs. A
check module defines:

    DEFAULTS: dict            # its settings (nndoctor.yaml section, CLI options)
    def run(session, settings) -> Outcome

and raises `engine.Skip("reason")` when it lacks what it needs. Its row below
says what the runner and the command line need to know without importing it:
what it needs, whether it trains, which of its codes block later checks, and
its command (help and options; `nndoctor NAME` is generated from the row).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Option:
    """One command-line option of a check's command: `--NAME` sets `settings[NAME]`
    (underscores become dashes in the flag: `start_lr` -> `--start-lr`)."""

    name: str  # the setting's key, as in the check's DEFAULTS and its nndoctor.yaml section
    type: Union[type, tuple]  # int, float, str, or a tuple of the allowed strings
    help: str
    budget: bool = False  # a size budget: 5e6, 25M, 1.5G (config.parse_budget)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class CheckInfo:
    name: str
    module: str
    title: str
    needs: str = ""  # "", "data" (a train loader) or "val" (a validation loader too)
    trains: bool = False  # steps the optimizer: needs a trainable parameter
    # Codes after which the loss cannot be computed: a later check that then raises is
    # skipped, naming the finding, rather than reported as a second, confusing error.
    blocks: tuple = ()
    help: str = ""  # the `nndoctor NAME` command's help; no command when empty
    options: tuple = ()  # the command's own options (Option), before the shared ones


@dataclass
class Outcome:
    """What a check returns: its findings, metrics, and top-level report sections."""

    findings: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)  # e.g. {"size": {...}} (SPEC §4)


CHECKS = {c.name: c for c in [
    CheckInfo("size", "nndoctor.checks.size", "Parameters, size and compute",
              help="Parameters, parameter memory, mult-adds and FLOPs (torchinfo, FlopCounterMode).",
              options=(Option("input", str, "Input shape, e.g. 1,3,224,224."),
                       Option("max_params", str, "Budget: parameters (5e6, 25M).", budget=True),
                       Option("max_mb", str, "Budget: parameter MB.", budget=True),
                       Option("max_flops", str, "Budget: FLOPs per forward pass (2e9, 1.5G).", budget=True),
                       Option("depth", int, "Per-module breakdown to this depth."))),
    CheckInfo("data", "nndoctor.checks.data", "Data sanity", needs="data", blocks=("label-out-of-range",),
              help="Data sanity: NaN/Inf, labels out of range, unnormalised inputs."),
    CheckInfo("static", "nndoctor.checks.static", "Setup before the first step", needs="data"),
    CheckInfo("init", "nndoctor.checks.init", "Initialisation", needs="data",
              help="Initialisation: first loss, activation scale with depth, output/loss wiring, "
                   "batch mixing."),
    CheckInfo("nan", "nndoctor.checks.nan", "NaN/Inf", needs="data", trains=True,
              help="The first module (and op) that produces NaN/Inf, forward or backward.",
              options=(Option("steps", int, "Training steps to watch."),)),
    CheckInfo("grads", "nndoctor.checks.grads", "Gradients", needs="data", trains=True,
              help="Per-layer gradient statistics: vanishing, exploding, missing, not optimised."),
    CheckInfo("dead", "nndoctor.checks.dead", "Dead and saturated units", needs="data",
              help="Dead ReLU-family units and saturated sigmoid/tanh units.",
              options=(Option("threshold", float,
                              "Percent of never-firing units that makes a layer dead [default: 50]."),)),
    CheckInfo("overfit", "nndoctor.checks.overfit", "Overfit one batch", needs="data", trains=True,
              help="Train on one batch alone: a working model memorises it.",
              options=(Option("steps", int, "Training steps on one batch [default: 100]."),
                       Option("threshold", float, "Final loss to reach [default: 0.1]."))),
    CheckInfo("lr-find", "nndoctor.checks.lr_find", "LR range test", needs="data", trains=True,
              help="The LR range test (torch-lr-finder): a suggested LR and the curve.",
              options=(Option("start_lr", float, "[default: 1e-7]"),
                       Option("end_lr", float, "[default: 10]"),
                       Option("num_iter", int, "[default: 100]"),
                       Option("plot", str, "Save the LR curve as a PNG."),
                       Option("method", ("race", "valley", "steepest", "min10"),
                              "Which LR is suggested: the race's winner, or a rule read from the curve "
                              "(fastai's valley, torch-lr-finder's steepest, min10: a tenth of the "
                              "minimum's). [default: race]"),
                       Option("cache", ("auto", "memory", "disk"),
                              "Where the test keeps its copy of the weights: auto, memory or disk. "
                              "[default: auto: disk above 256 MB]"))),
    CheckInfo("fit", "nndoctor.checks.fit", "Over/underfitting", needs="val", trains=True,
              help="Over/underfitting: a few epochs, the validation loader evaluated after each.",
              options=(Option("epochs", int, "Epochs to train [default: 5]."),
                       Option("plot", str, "Save the loss curves as a PNG."))),
]}


def load(name: str):
    """The module implementing check `name`."""
    return importlib.import_module(CHECKS[name].module)


def defaults(name: str) -> dict:
    return dict(getattr(load(name), "DEFAULTS", {}))

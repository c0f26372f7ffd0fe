"""fit: train for a few epochs, evaluating the validation loader each epoch (SPEC §2, §3).

The model trains with the user's optimizer over the whole training loader for
`epochs` epochs (the runner restores weights, optimizer and RNGs afterwards).
Each epoch records the mean training loss (train mode, as it trained), the
mean validation loss (eval mode, no_grad) and, in the same eval mode, the loss
on the first training batches (as many samples as the validation set, at most
the whole loader), all weighted by batch size.

- `overfitting`: the validation loss ends more than OVERFIT_MARGIN above its
  lowest epoch while the eval-mode training loss kept falling after that epoch,
  and ends with a real gap: the validation loss more than OVERFIT_MARGIN above
  the eval-mode training loss (both in one mode: train-mode running averages
  against an eval-mode validation loss show gaps that are only BatchNorm's
  running statistics or dropout). The report names the first epoch whose
  validation loss rose.
- `underfitting`, judged only after MIN_UNDERFIT_STEPS optimizer steps (fewer
  say why it was not judged): even the best epoch's training loss stays above
  UNDERFIT_RATIO × the loss of a trivial predictor that ignores the inputs
  (`baseline_loss`): the class prior's entropy for cross-entropy/NLL, the
  binary entropy of each output's mean for BCE, the targets' variance for MSE,
  all measured on the training targets during the first epoch. Other losses
  (a `loss_fn`, a model's own `.loss`, L1...) have no baseline: only
  overfitting is judged then.
"""

from __future__ import annotations

import math
from typing import Optional, cast

import torch
import torch.nn as nn

from ..engine.session import Batch, Session
from ..report.findings import make_finding
from . import Outcome

NAME = "fit"
DEFAULTS = {
    "epochs": 5,  # SPEC §2: 5 epochs by default
    "plot": None,  # a PNG path: training and validation loss per epoch
}
# Overfitting: the last validation loss is > 10% above the lowest. Epoch-to-epoch noise of a
# full validation pass is a few percent on healthy runs (mlp, seeds 0-4: the validation loss
# falls every epoch); a memorising model's rises by tens of percent within a few epochs.
OVERFIT_MARGIN = 0.10
# ... and the rise must give back a real share of what validation had gained over the trivial
# predictor (or over epoch 1 when no baseline is known). Measured: the zoo's DistilBERT and
# LSTM classifier (val accuracy 97-99%) rose from val 0.020 to 0.048 and 0.091 to 0.101 at
# their last epoch, giving back 4% and 1.8% of their gain; memorising_mlp gives back 104%.
OVERFIT_GIVEN_BACK = 0.10
# Underfitting: the best epoch's training loss is still > 80% of what a predictor that
# ignores the inputs reaches. Such a model has learnt almost nothing beyond the label
# frequencies; every healthy setup we measured ends below 40% of it within 5 epochs
# (mlp: ~5%), while a 1-unit bottleneck stays at ~90%.
UNDERFIT_RATIO = 0.8
# Underfitting needs this many optimizer steps before "the loss stays high" means anything.
# Measured: a healthy Keras-style-init MLP (normal sigma 0.05) at Adam 3e-4 takes ~125 steps
# just to fall below 80% of ln 10 on ONE batch (plain loop, seed 0); issue 13's false alarms
# came after ~150 steps (5 epochs of a tiny loader). 300 steps is 2.4x that; a 1-unit
# bottleneck is flat at ~90% of the baseline from step ~150 on.
MIN_UNDERFIT_STEPS = 300
# ... nor while the loss is still clearly falling: the last epoch's training loss >= 5% below
# the epoch before means "train longer to judge", not "stays high". Measured last-epoch drops:
# the Keras-init classifier sample 13% (still learning: 71% of the baseline after 320 steps),
# a 1-unit bottleneck (tiny_capacity_mlp) 1%.
UNDERFIT_STILL_FALLING = 0.05
# An epoch whose training loss is > 5% above the epoch before: the loss is unstable
# (oscillating or diverging), so the underfitting fix says lower the LR, not raise it.
UNSTABLE_RISE = 0.05
UNSTABLE_FIX = ("The training loss rose between epochs: the LR is probably too high for this "
                "setup. Lower the LR (try the lr-find suggestion) or add warm-up/clipping; then "
                "add capacity or train longer if it still stays high.")


class TargetStats:
    """The loss of the best input-independent predictor, accumulated over the training targets."""

    def __init__(self, criterion):
        self.kind = _baseline_kind(criterion)
        self.criterion = criterion
        self.counts: Optional[torch.Tensor] = None  # class counts (cross-entropy / NLL)
        self.sum = self.sum_sq = None  # per-output sums (MSE, BCE)
        self.n = 0

    def add(self, target) -> None:
        if self.kind is None:
            return
        if not isinstance(target, torch.Tensor):
            self.kind = None
            return
        target = target.detach()
        if self.kind == "class-prior":
            if target.is_floating_point():  # class probabilities, not indices: no simple prior
                self.kind = None
                return
            labels = target.flatten()
            labels = labels[labels != getattr(self.criterion, "ignore_index", -100)].long()
            if labels.numel() and int(labels.min()) < 0:
                self.kind = None  # the data check reports labels out of range
                return
            counts = torch.bincount(labels.cpu(), minlength=1).double()
            if self.counts is not None:
                size = max(len(counts), len(self.counts))
                counts = nn.functional.pad(counts, (0, size - len(counts)))
                counts += nn.functional.pad(self.counts, (0, size - len(self.counts)))
            self.counts = counts
            return
        columns = target.reshape(target.shape[0], -1).double().cpu() if target.dim() else \
            target.reshape(1, 1).double().cpu()
        s, sq = columns.sum(0), (columns * columns).sum(0)
        if self.sum is not None and self.sum.shape != s.shape:
            self.kind = None  # targets of varying shape: no per-output baseline
            return
        self.sum = s if self.sum is None else self.sum + s
        self.sum_sq = sq if self.sum_sq is None else self.sum_sq + sq
        self.n += columns.shape[0]

    def loss(self, num_classes: Optional[int] = None) -> Optional[float]:
        if self.kind == "class-prior" and self.counts is not None and self.counts.sum() > 0:
            prior = self.counts / self.counts.sum()
            smoothing = float(getattr(self.criterion, "label_smoothing", 0.0) or 0.0)
            if smoothing:
                # The best constant prediction for smoothed targets is their mean distribution.
                classes = max(len(prior), num_classes or 0)
                prior = nn.functional.pad(prior, (0, classes - len(prior)))
                prior = (1 - smoothing) * prior + smoothing / classes
            p = prior[prior > 0]
            return float(-(p * p.log()).sum())
        if self.kind == "variance" and self.n:
            mean = self.sum / self.n
            return float((self.sum_sq / self.n - mean * mean).clamp_min(0).mean())
        if self.kind == "binary-entropy" and self.n:
            # BCE is linear in the target, so even for soft targets the best constant is
            # each output's mean m, with loss H(m) = -m log m - (1-m) log(1-m).
            m = (self.sum / self.n).clamp(0, 1)
            h = -(m * m.clamp_min(1e-12).log() + (1 - m) * (1 - m).clamp_min(1e-12).log())
            return float(h.mean())
        return None


def _baseline_kind(criterion) -> Optional[str]:
    if getattr(criterion, "reduction", "mean") != "mean":
        return None  # a summed loss scales with the batch: not comparable with a mean baseline
    if isinstance(criterion, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return None if criterion.weight is not None else "class-prior"
    if isinstance(criterion, nn.MSELoss):
        return "variance"
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        return None if criterion.weight is not None or criterion.pos_weight is not None else "binary-entropy"
    if isinstance(criterion, nn.BCELoss):
        return None if criterion.weight is not None else "binary-entropy"
    return None


def _target_of(batch: Batch):
    return batch.target


def run(session: Session, settings: dict) -> Outcome:
    epochs = int(settings["epochs"])
    if epochs < 1:
        raise ValueError(f"fit.epochs must be at least 1, not {epochs}")
    stats = TargetStats(None if session.uses_model_loss else session.criterion)
    try:
        batches_per_epoch = len(session.setup.train_loader)
    except TypeError:  # an iterable without a length
        batches_per_epoch = None
    train_losses, val_losses, train_eval_losses = [], [], []
    stopped = None
    optimizer_steps = 0
    eval_batches = None  # training batches evaluated in eval mode each epoch
    with session.progress("fit", epochs * batches_per_epoch if batches_per_epoch else None) as advance:
        for epoch in range(epochs):
            total, count = None, 0
            for batch in session.iterate("train_loader"):
                loss = session.train_step(batch)
                optimizer_steps += 1
                size = batch.batch_size or 1
                total = loss * size if total is None else total + loss * size  # no sync per step
                count += size
                if epoch == 0:
                    stats.add(_target_of(batch))
                advance()
            train_loss = float(cast(torch.Tensor, total)) / count
            if not math.isfinite(train_loss):
                stopped = f"the training loss became non-finite in epoch {epoch + 1}"
                break
            train_losses.append(train_loss)
            val_loss, val_count = evaluate(session)
            val_losses.append(val_loss)
            if eval_batches is None:
                per_batch = max(count // max(optimizer_steps, 1), 1)
                eval_batches = max(1, min(optimizer_steps, -(-val_count // per_batch)))
            train_eval_losses.append(evaluate_batches(session, session.batches(eval_batches))[0])
    num_classes = None
    if stats.kind == "class-prior" and getattr(session.criterion, "label_smoothing", 0.0):
        num_classes = session.num_outputs()
    baseline = stats.loss(num_classes)
    section = {"epochs": epochs, "train_losses": train_losses, "val_losses": val_losses,
               "train_eval_losses": train_eval_losses,
               "baseline_loss": baseline, "baseline_kind": stats.kind if baseline is not None else None}
    outcome = Outcome(metrics={"epochs_done": len(train_losses),
                               "final_train_loss": train_losses[-1] if train_losses else None,
                               "final_val_loss": val_losses[-1] if val_losses else None,
                               "best_val_epoch": _best_epoch(val_losses),
                               "baseline_loss": baseline, "optimizer_steps": optimizer_steps,
                               "train_eval_batches": eval_batches})
    if stopped:
        outcome.metrics["stopped"] = section["stopped"] = stopped  # the nan check reports why
    if baseline is None:
        outcome.metrics["underfitting_not_judged"] = (
            "no trivial-predictor baseline for this loss (known: cross-entropy, NLL, BCE, MSE)")
    elif optimizer_steps < MIN_UNDERFIT_STEPS:
        outcome.metrics["underfitting_not_judged"] = (
            f"only {optimizer_steps} optimizer steps ({epochs} epochs of {batches_per_epoch or '?'} batches): "
            f"too few to call the loss high (at least {MIN_UNDERFIT_STEPS}); raise fit.epochs")
    if not stopped:
        overfit = overfitting(train_eval_losses, val_losses, baseline)
        if overfit:
            outcome.findings.append(overfit)
            section["overfit_from_epoch"] = overfit.evidence["from_epoch"]
        falling = _last_drop(train_losses)
        if baseline is not None and optimizer_steps >= MIN_UNDERFIT_STEPS and falling >= UNDERFIT_STILL_FALLING:
            outcome.metrics["underfitting_not_judged"] = (
                f"the training loss is still falling ({falling:.0%} lower in the last epoch): "
                "train longer (fit.epochs) to judge underfitting")
        elif optimizer_steps >= MIN_UNDERFIT_STEPS:
            under = underfitting(train_losses, baseline, stats.kind)
            if under:
                outcome.findings.append(under)
    plot_path = settings.get("plot")
    if plot_path and train_losses:  # drawn from this section by render/plots.py's write_plots
        section["plot"] = outcome.metrics["plot"] = str(plot_path)
    outcome.sections["fit"] = section
    return outcome


def evaluate(session: Session) -> tuple:
    """(mean validation loss, samples), eval mode, no_grad, weighted by batch size."""
    return evaluate_batches(session, session.iterate("val_loader"))


def evaluate_batches(session: Session, batches) -> tuple:
    """(mean loss over `batches`, samples), eval mode, no_grad, weighted by batch size."""
    model = session.model
    model.eval()
    total, count = None, 0
    try:
        with torch.no_grad():
            for batch in batches:
                loss = session.loss(batch).detach()
                size = batch.batch_size or 1
                total = loss * size if total is None else total + loss * size
                count += size
                session.tick()
    finally:
        model.train()
    return float(cast(torch.Tensor, total)) / count, count


def _last_drop(losses) -> float:
    """How much lower the last epoch's loss is than the one before (0 with under 2 epochs)."""
    if len(losses) < 2 or not losses[-2]:
        return 0.0
    return (losses[-2] - losses[-1]) / abs(losses[-2])


def _best_epoch(losses) -> Optional[int]:
    """1-based epoch of the lowest loss."""
    return min(range(len(losses)), key=lambda i: losses[i]) + 1 if losses else None


def given_back_share(start: float, lowest: float, last: float) -> float:
    """The share of what validation had gained (start -> lowest) that its rise to `last` gave
    back; inf when it had gained nothing (compared with OVERFIT_GIVEN_BACK, here and live)."""
    return (last - lowest) / (start - lowest) if start > lowest else math.inf


def overfitting(train_losses, val_losses, baseline: Optional[float] = None):
    """`train_losses`: the eval-mode loss on training data, the same mode as `val_losses`;
    `baseline`: the trivial predictor's loss, the start of what validation gained."""
    if len(val_losses) < 2 or not all(math.isfinite(v) for v in val_losses):
        return None
    best = min(range(len(val_losses)), key=lambda i: val_losses[i])  # the lowest's index
    lowest, last = val_losses[best], val_losses[-1]
    rise = (last - lowest) / abs(lowest) if lowest else math.inf
    if best == len(val_losses) - 1 or rise <= OVERFIT_MARGIN:
        return None
    if not train_losses[-1] < train_losses[best]:
        return None  # both rising: training itself went wrong (the LR), not memorisation
    start = baseline if baseline is not None and baseline > lowest else val_losses[0]
    given_back = given_back_share(start, lowest, last)
    if given_back < OVERFIT_GIVEN_BACK:
        return None  # a wobble near the floor, not a turn (see OVERFIT_GIVEN_BACK)
    gap = (last - train_losses[-1]) / abs(last) if last else 0.0
    if gap <= OVERFIT_MARGIN:
        return None  # no train/val gap in one mode: not memorisation (issue 13 item 14)
    from_epoch = best + 2  # 1-based: the first epoch after the lowest validation loss
    evidence = {"from_epoch": from_epoch, "best_val_epoch": best + 1, "best_val_loss": lowest,
                "final_val_loss": last, "val_rise": rise, "gap": gap,
                "train_loss_at_best": train_losses[best], "final_train_loss": train_losses[-1],
                "train_losses": train_losses, "val_losses": val_losses, "margin": OVERFIT_MARGIN,
                "given_back": given_back}
    return make_finding(
        "overfitting", NAME, None,
        f"From epoch {from_epoch} the validation loss rose from {lowest:.4g} (epoch {best + 1}) to "
        f"{last:.4g} (epoch {len(val_losses)}, +{rise:.0%}) while the training loss (eval mode) fell from "
        f"{train_losses[best]:.4g} to {train_losses[-1]:.4g}, {gap:.0%} below it.", evidence)


def underfitting(train_losses, baseline: Optional[float], kind: Optional[str]):
    if baseline is None or baseline <= 0 or not train_losses:
        return None
    best = min(train_losses)
    ratio = best / baseline
    if ratio <= UNDERFIT_RATIO:
        return None
    what = {"class-prior": "predicting the class frequencies",
            "binary-entropy": "predicting each output's mean",
            "variance": "predicting the targets' mean"}[cast(str, kind)]
    unstable = any(b > (1 + UNSTABLE_RISE) * a for a, b in zip(train_losses, train_losses[1:]))
    evidence = {"best_train_loss": best, "final_train_loss": train_losses[-1], "baseline_loss": baseline,
                "baseline_kind": kind, "ratio": ratio, "threshold": UNDERFIT_RATIO,
                "epochs": len(train_losses), "train_losses": train_losses, "unstable": unstable}
    return make_finding(
        "underfitting", NAME, None,
        f"After {len(train_losses)} epochs the training loss is still {best:.4g}, {ratio:.0%} of the "
        f"{baseline:.4g} a trivial predictor reaches by {what} (threshold {UNDERFIT_RATIO:.0%})"
        + ("; it rose between epochs, so the LR is more likely too high than too low." if unstable else "."),
        evidence, fix=UNSTABLE_FIX if unstable else None)

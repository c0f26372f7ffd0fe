"""Every finding code, documented once.

`nndoctor codes`, `nndoctor explain CODE`, the `fix` of every finding and the
README's table all come from this table. It must not import torch: `codes` and
`explain` answer in a fraction of torch's import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    severity: str  # default severity: "error" | "warning" | "info"
    check: str  # the check that reports it
    meaning: str  # one line: what the finding says
    why: str  # why it matters
    fix: str  # the suggested fix (seeded from SPEC §7)


_TABLE = [
    Code(
        "loss-not-decreasing", "error", "overfit",
        "The loss does not go down at all in a short run.",
        "A model that cannot lower its loss on a handful of steps will not learn on "
        "the full data either: the LR, the loss wiring or the initialisation is wrong.",
        "Adjust the LR (try the lr-find suggestion) and check the initialisation; "
        "make sure the optimizer holds the model's parameters.",
    ),
    Code(
        "cannot-overfit", "error", "overfit",
        "One batch, trained alone, stays above the loss threshold.",
        "Any working model can memorise a single batch. If it cannot, the structure "
        "(a bottleneck, a wrong output size, a detached path) or the LR is broken.",
        "Check the model structure (output size, activations, detached tensors) and the LR.",
    ),
    Code(
        "vanishing-gradient", "warning", "grads",
        "Early layers' gradients are orders of magnitude below the last layers', or ≈ 0.",
        "Layers whose gradients vanish barely train: a deep network then behaves like "
        "a shallow one, or does not learn at all.",
        "Use ReLU-family activations, residual connections and proper (He/Xavier) init; "
        "add normalisation layers.",
    ),
    Code(
        "exploding-gradient", "error", "grads",
        "Gradient norms are huge or grow without bound.",
        "Huge gradients make steps overshoot; the loss oscillates and ends in NaN/Inf.",
        "Clip gradients (torch.nn.utils.clip_grad_norm_), lower the LR, check the init scale.",
    ),
    Code(
        "non-finite", "error", "nan",
        "NaN/Inf in the loss, an activation or a gradient; `where` is the first module that produced it.",
        "One NaN poisons every weight it reaches in the next update; training is lost.",
        "Lower the LR; use log(x + eps) and eps in denominators; clamp before sqrt/log; "
        "use Xavier/He init.",
    ),
    Code(
        "dead-neurons", "warning", "dead",
        "An activation layer has more units than the threshold (50%) that never fire on the scanned batches, "
        "at initialisation or after the training run.",
        "A unit that never fires passes no gradient, so it never recovers: the capacity is lost.",
        "Lower the LR, use LeakyReLU/GELU, He init, and check the biases (no large negative bias).",
    ),
    Code(
        "saturated-activations", "warning", "dead",
        "Sigmoid/tanh units stuck near their asymptotes.",
        "A saturated sigmoid/tanh has a derivative ≈ 0: the gradient vanishes through it.",
        "Normalise the inputs, use a smaller init scale or ReLU-family activations, add normalisation.",
    ),
    Code(
        "bad-init", "warning", "init",
        "Activation scale collapses or explodes with depth at initialisation, or a layer's output is "
        "the same for every sample.",
        "When the signal shrinks or grows layer after layer, gradients vanish or explode "
        "before training even starts; a layer blind to its input (all-zero weights) passes nothing on.",
        "Use He (kaiming_normal_) init for ReLU layers, Xavier for tanh/sigmoid (never all-zero "
        "weights); add normalisation layers.",
    ),
    Code(
        "init-loss", "warning", "init",
        "The initial loss is far from its expected value (ln C for C-class cross-entropy).",
        "An untrained classifier should be unsure of every class. A much larger first loss "
        "means over-confident logits (a mis-scaled last layer), wasting the first steps.",
        "Scale the last layer's init down (e.g. its weights x 0.1, or zero them) and set its bias "
        "to the class prior; an init range that depends on the number of classes (1/sqrt(C)) is "
        "too hot for few classes.",
    ),
    Code(
        "no-gradient", "error", "grads",
        "A trainable parameter receives no gradient, or always exactly zero.",
        "A parameter without gradient never changes: an unused layer or a `.detach()` "
        "in forward cuts it off from the loss.",
        "Remove the unused layer, or the .detach()/.data/no_grad on the path to the loss; "
        "freeze it deliberately with requires_grad_(False) if that is intended.",
    ),
    Code(
        "not-in-optimizer", "error", "grads",
        "A trainable parameter is not in any optimizer parameter group.",
        "It receives gradients but is never updated.",
        "Build the optimizer over model.parameters() (or add the missing parameters to a param group).",
    ),
    Code(
        "lr-too-high", "warning", "lr-find",
        "Trained from the same state on the same batches as a lower LR in lr-find's race, the "
        "optimizer's LR diverges, or makes a fraction of its progress over the same steps.",
        "Too high an LR makes the loss oscillate or diverge, or kills ReLU units so that the loss "
        "stalls; a longer run does not recover.",
        "Lower the LR towards the race's winner, the suggested LR of `nndoctor lr-find`.",
    ),
    Code(
        "lr-too-low", "warning", "lr-find",
        "The optimizer's LR is 0, or, trained from the same state on the same batches as a higher "
        "LR in lr-find's race, it never moves the loss or makes a small fraction of its progress.",
        "Too low an LR makes training needlessly slow or stall; an LR of 0 (e.g. `0.1 * (64 // 256)`) "
        "moves no weight at all.",
        "Raise the LR towards the race's winner, the suggested LR of `nndoctor lr-find` (an LR of 0: "
        "fix the formula that computes it).",
    ),
    Code(
        "overfitting", "warning", "fit",
        "Validation loss rises while training loss falls.",
        "The model memorises the training data instead of generalising.",
        "Add dropout, data augmentation or weight decay; get more data; stop earlier.",
    ),
    Code(
        "underfitting", "warning", "fit",
        "Training loss stays high over the whole training data.",
        "The model cannot fit even the data it trains on: too little capacity or too low an LR.",
        "Add capacity (wider/deeper layers) or train longer; raise the LR only if the loss falls "
        "smoothly but slowly (if it oscillates or rises, lower it).",
    ),
    Code(
        "data-non-finite", "error", "data",
        "NaN/Inf in a batch's inputs or targets.",
        "A single non-finite value turns the loss, and then every weight, into NaN.",
        "Clean the data: drop or impute missing values, check divisions in the preprocessing.",
    ),
    Code(
        "label-out-of-range", "error", "data",
        "Class targets outside [0, num_outputs), or BCE targets outside [0, 1].",
        "CrossEntropyLoss indexes the logits by label: out-of-range labels crash "
        "(or, on CUDA, fail with an opaque device-side assert); BCELoss rejects targets outside "
        "[0, 1] and BCEWithLogitsLoss silently computes a meaningless (even negative) loss.",
        "Make the output layer as wide as the number of classes, or remap the labels to 0..C-1; "
        "for BCE, map the labels to 0/1 (-1/+1 labels: (y + 1) / 2).",
    ),
    Code(
        "unnormalized-input", "warning", "data",
        "Inputs far from zero mean / unit scale (e.g. raw 0–255 pixels).",
        "Large or off-centre inputs saturate activations and need a much smaller LR.",
        "Normalise the inputs (e.g. transforms.Normalize(mean, std), or divide pixels by 255).",
    ),
    Code(
        "output-activation-mismatch", "error", "init",
        "A softmax/sigmoid output fed to a loss that expects logits, or the reverse.",
        "CrossEntropyLoss and BCEWithLogitsLoss apply (log-)softmax/sigmoid themselves: "
        "doing it twice flattens the gradients; BCELoss/NLLLoss on raw logits is wrong.",
        "Remove the final Softmax/Sigmoid when using CrossEntropyLoss/BCEWithLogitsLoss, "
        "or use the loss that matches the output (NLLLoss after LogSoftmax).",
    ),
    Code(
        "batch-dependency", "error", "init",
        "One sample's output depends on other samples' inputs, checked in eval mode.",
        "A view/transpose that mixes the batch lets samples leak into each other: "
        "the model learns nonsense and results depend on the batch size.",
        "Use permute/transpose instead of view to reorder dimensions; keep the batch dimension first; "
        "give an RNN/LSTM/GRU fed (batch, time, features) batch_first=True.",
    ),
    Code(
        "model-too-large", "error", "size",
        "A size budget given by the user is exceeded.",
        "The model exceeds a parameter, memory or compute budget set for it.",
        "Shrink the model (fewer/narrower layers) or raise the budget deliberately.",
    ),
    Code(
        "loss-task-mismatch", "error", "static",
        "A regression loss on class labels, or a classification loss on continuous targets.",
        "MSE/L1 on one-hot or index labels treats classes as numbers on a line and, after a softmax, "
        "gives vanishing gradients; cross-entropy on continuous targets is not a likelihood of them.",
        "Classes: CrossEntropyLoss on the raw logits with integer (long) labels. Regression: "
        "MSELoss/L1Loss with float targets of the output's shape.",
    ),
    Code(
        "single-unit-softmax", "error", "static",
        "Softmax/log-softmax over a dimension of size 1: the output is constant, the gradient exactly 0.",
        "softmax of one value is always 1 (log-softmax 0), whatever the input: the loss cannot depend on "
        "the weights, every gradient before it is exactly zero, and nothing trains.",
        "For one binary output use a sigmoid (or BCEWithLogitsLoss on the raw logit); for C classes give "
        "the last layer C outputs and take the softmax over that dimension.",
    ),
    Code(
        "output-range-mismatch", "error", "static",
        "A bounded output (sigmoid, tanh, softmax, ReLU) cannot reach the regression targets' range.",
        "The final activation caps what the model can predict: targets outside its range can never be "
        "fitted, and a saturated sigmoid/tanh passes almost no gradient.",
        "Remove the final activation (a linear output) for regression, or rescale the targets into its range.",
    ),
    Code(
        "unscaled-targets", "warning", "static",
        "Regression targets far from unit scale.",
        "The output layer starts at unit scale: targets of hundreds make the first loss and its "
        "gradients huge, and the LR that suits the weights is wrong for the output's bias.",
        "Standardise the targets ((y - mean) / std, undone at prediction), or predict log(y) for "
        "positive targets spanning orders of magnitude.",
    ),
    Code(
        "shape-broadcast", "error", "static",
        "Output and target shapes broadcast against each other in the loss, e.g. (B,) and (B, 1).",
        "An elementwise loss on (B, 1) and (B,) compares every output with every target ((B, B) pairs): "
        "the loss is finite and falls a little, but the model learns the targets' mean. PyTorch only warns.",
        "Make the shapes equal: output.squeeze(-1) (or target.unsqueeze(-1)) before the loss.",
    ),
    Code(
        "constant-targets", "error", "static",
        "Every target in the scanned batches has the same value.",
        "With one target value there is nothing to learn but that constant, and the loss reaches "
        "zero without the inputs mattering (e.g. `y / 255` on integer labels gives all 0).",
        "Check the target preprocessing (integer division, a wrong column, a mask applied twice).",
    ),
    Code(
        "dropout-in-eval", "error", "static",
        "Two eval-mode forward passes of the same batch differ (e.g. `F.dropout` without `training=`).",
        "F.dropout defaults to training=True: model.eval() does not switch it off, so validation "
        "and inference stay random and are scored with units dropped.",
        "Use an nn.Dropout module, or pass training=self.training to F.dropout.",
    ),
    Code(
        "unregistered-module", "error", "static",
        "A layer or a tensor that requires grad is held in a plain list, dict or attribute: not in `parameters()`.",
        "Only registered submodules and nn.Parameters are in model.parameters(), state_dict() and "
        "moved by .to(): a layer in a plain list is used in forward but never trained or saved.",
        "Use nn.ModuleList/nn.ModuleDict for layers, nn.Parameter (or register_buffer) for tensors.",
    ),
    Code(
        "unshuffled-data", "warning", "static",
        "Batches each hold (almost) a single class: class-sorted data without shuffling.",
        "Each step then pulls the model towards one class; it forgets the others between batches "
        "and the loss swings instead of falling.",
        "Shuffle the training loader (DataLoader(..., shuffle=True)) or shuffle the data once.",
    ),
    Code(
        "symmetric-init", "error", "static",
        "The units of a layer start identical (constant init), so they stay identical.",
        "Identical units get identical gradients and identical updates: the layer never becomes "
        "more than one unit wide (an all-zero init also gives zero gradients).",
        "Initialise weights randomly (the layer's default, or kaiming_/xavier_ init); only biases "
        "and the last layer may start at zero.",
    ),
    Code(
        "flops-undercounted", "info", "size",
        "torchinfo's mult-adds and the FLOP count disagree by more than 2×.",
        "torchinfo estimates each layer's mult-adds from its parameters and output size "
        "through module hooks: it misses functional calls (attention matmuls), counts a "
        "Linear over a sequence once per sample, and counts lookups (Embedding) as mult-adds.",
        "Trust `flops` (every matmul, convolution and attention the forward pass ran); "
        "size and budget compute with `--max-flops`.",
    ),
    Code(
        "eval-mode-in-training", "warning", "watch",
        "Optimizer steps are taken while Dropout/BatchNorm modules that were training are in eval mode.",
        "After `model.eval()` for a validation pass that is never undone, dropout is off and "
        "BatchNorm normalises with frozen running statistics: the model trains without "
        "regularisation and its BatchNorm statistics stop tracking the weights.",
        "Call model.train() after each validation pass (or use a context that restores the mode).",
    ),
    Code(
        "loss-spike", "warning", "watch",
        "The loss jumps far above its running median and stays there or recurs.",
        "A spike undoes much of the progress made; repeated spikes mean the updates are "
        "intermittently too large (LR, a bad batch, missing warm-up or clipping) and often "
        "precede a divergence.",
        "Lower the LR or add warm-up, clip gradients (clip_grad_norm_), and look for bad batches "
        "(outliers, wrong labels) around the spike's step.",
    ),
    Code(
        "amp-skipped-steps", "error", "watch",
        "After the scale's calibration, the GradScaler skips a large share of the steps (overflow).",
        "A skipped step applies no update: the run spends its time doing nothing, while the "
        "scale shrinks towards 0 and underflows the gradients.",
        "Find the float16 overflow (large activations or inputs; normalise them), run the overflowing "
        "op in float32 (autocast(enabled=False)), or use bfloat16, which has float32's range.",
    ),
    Code(
        "clip-before-unscale", "error", "watch",
        "Gradients are clipped while still multiplied by the GradScaler's scale.",
        "The scaled gradients are ~65,536 times too large, so clip_grad_norm_ clips every step: "
        "max_norm is in effect divided by the scale and the updates shrink to nothing.",
        "Call scaler.unscale_(optimizer) before clip_grad_norm_ (and then scaler.step(optimizer)).",
    ),
    Code(
        "lr-collapsed", "warning", "watch",
        "The LR schedule has driven every group's LR to ~0 long before training ends.",
        "With an LR of ~0 the remaining steps change nothing: a schedule meant per epoch "
        "stepped per batch, or a decay too fast for the run's length, ends training early.",
        "Step the scheduler as often as its length assumes (per epoch vs per batch), or set its "
        "length (T_max, total_steps, step_size) in the unit it is stepped in.",
    ),
]

CODES: dict[str, Code] = {c.code: c for c in _TABLE}

# Severities from least to most severe: `--fail-on` compares with this.
SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2}


def markdown_table() -> str:
    """The README's table of codes: generated here so it cannot drift from the code."""
    rows = ["| code | severity | check | meaning | fix |", "|---|---|---|---|---|"]
    for c in CODES.values():
        rows.append(f"| `{c.code}` | {c.severity} | {c.check} | {c.meaning} | {c.fix} |")
    return "\n".join(rows)

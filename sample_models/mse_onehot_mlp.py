"""Broken: a softmax classifier trained with MSELoss on one-hot labels (a Keras habit).

Bug: a regression loss on a classification task. MSE on softmax probabilities has
vanishing gradients once a class is wrong with confidence, and treats the one-hot rows as
numbers to regress. Expected: `loss-task-mismatch` from the `static` check (`where` None:
the criterion is at fault, not a layer).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=11)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5), nn.Softmax(dim=1))
    return {
        "model": model,
        "train_loader": loader(x, F.one_hot(y, 5).float(), batch_size=32),
        "criterion": nn.MSELoss(),  # the bug: CrossEntropyLoss on logits with the integer labels
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }

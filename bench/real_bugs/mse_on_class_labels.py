"""Mean squared error on integer class labels, with one linear output.

Source: "Вы используете неправильную потерю, среднеквадратическая ошибка - это потеря для регрессии" —
http://pullrequest.ru/14126136/polzovatelskaya-funktsiya-poter-dlya-prognozirovaniya-vyhodnyh-dannyh-interget

The bug (Keras, ported): the model predicts an integer class 1 ... N with a single output
unit trained by mean squared error. The answer: MSE is a regression loss and this is a
classification problem (discrete outputs, not continuous): the model averages
neighbouring classes and rounds to the wrong one.
The fix (the answer): N outputs with a softmax and a classification loss
(`sparse_categorical_crossentropy` on labels 0 ... N-1 — in PyTorch, N logits into
CrossEntropyLoss), predicting with argmax (+1).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("loss-task-mismatch", None)]

N = 5


def buggy() -> dict:
    seeded()
    x, y = teacher_classification(512, 12, N, seed=15)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 1))
    # labels 1 ... N as floats, one output, MSE: as in the post
    return {"model": model, "train_loader": loader(x, (y + 1).float()[:, None], batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.SGD(model.parameters(), lr=1e-3)}


def fixed() -> dict:
    seeded()
    x, y = teacher_classification(512, 12, N, seed=15)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, N))
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.SGD(model.parameters(), lr=1e-1)}


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())

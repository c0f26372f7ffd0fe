"""F.dropout on attention scores without training=self.training (pytorch-fm's AFM).

Source: "F.dropout的问题" — https://github.com/rixwew/pytorch-fm/issues/21

The bug: the attentional factorization machine computes
`attn_scores = F.dropout(attn_scores, p=0.1)` in forward; with the functional default
`training=True`, dropout is applied in `model.eval()` too, so predictions are random at
test time.
The fix (the maintainer's commit 8ac848d): `F.dropout(attn_scores, p=0.1,
training=self.training)` (and likewise for the output dropout).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from _common import generator, learns, loader, seeded

EXPECTED = [("dropout-in-eval", None)]

FIELDS, VOCAB, EMBED = 6, 40, 8


class AttentionalFM(nn.Module):
    """pytorch-fm's AttentionalFactorizationMachineModel, reduced to its parts."""

    def __init__(self, follow_mode: bool):
        super().__init__()
        self.follow_mode = follow_mode
        self.embedding = nn.Embedding(FIELDS * VOCAB, EMBED)
        self.linear = nn.Embedding(FIELDS * VOCAB, 1)
        self.attention = nn.Linear(EMBED, 16)
        self.projection = nn.Linear(16, 1)
        self.fc = nn.Linear(EMBED, 1)
        self.register_buffer("offsets", torch.arange(FIELDS) * VOCAB)
        rows, cols = torch.triu_indices(FIELDS, FIELDS, offset=1)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)

    def _dropout(self, x, p):
        return F.dropout(x, p=p, training=self.training) if self.follow_mode else F.dropout(x, p=p)

    def forward(self, fields):
        idx = fields + self.offsets
        emb = self.embedding(idx)
        inner = emb[:, self.rows] * emb[:, self.cols]
        attn_scores = F.softmax(self.projection(F.relu(self.attention(inner))), dim=1)
        attn_scores = self._dropout(attn_scores, 0.1)
        attn_output = self._dropout((attn_scores * inner).sum(dim=1), 0.1)
        return (self.linear(idx).sum(dim=1) + self.fc(attn_output)).squeeze(1)


def _data():
    g = generator(6)
    x = torch.randint(0, VOCAB, (512, FIELDS), generator=g)
    w = torch.randn(FIELDS, VOCAB, generator=g)
    logit = w[torch.arange(FIELDS), x].sum(1) / FIELDS ** 0.5
    return x, (logit > 0).float()


def _build(follow_mode: bool) -> dict:
    seeded()
    model = AttentionalFM(follow_mode)
    return {"model": model, "train_loader": loader(*_data(), batch_size=64),
            "criterion": nn.BCEWithLogitsLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def buggy() -> dict:
    return _build(follow_mode=False)


def fixed() -> dict:
    return _build(follow_mode=True)


def verify_fixed() -> dict:
    from _common import accuracy
    s = fixed()
    return learns(s, 15, lambda: accuracy(s["model"], s["train_loader"], lambda o: (o > 0).float()),
                  0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())

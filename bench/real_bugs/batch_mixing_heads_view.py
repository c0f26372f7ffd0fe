"""Multi-head self-attention that merges its heads with `view` instead of `permute`.

Source: "A possible bug in self_attention.py" — https://github.com/hackiey/QAnet-pytorch/issues/2

The bug: QANet's self-attention stacks the heads as `heads` of shape
(n_heads, batch, l, d) and merges them with `heads.view(batch_size, l, -1)`. A view
reinterprets memory in order, so sample b's merged vector is built from other samples'
heads: the samples of a batch are mixed (it went unnoticed with one head).
The fix (the maintainer's, as proposed in the issue):
`heads.permute(1, 2, 0, 3).contiguous().view(batch_size, l, -1)`.
"""

import torch
import torch.nn as nn
from _common import accuracy, generator, learns, loader, seeded

EXPECTED = [("batch-dependency", "attention")]

HEADS, DIM, SEQ, VOCAB = 4, 8, 10, 20


class SelfAttention(nn.Module):
    def __init__(self, permute: bool):
        super().__init__()
        self.permute = permute
        self.q = nn.ModuleList(nn.Linear(DIM * HEADS, DIM) for _ in range(HEADS))
        self.k = nn.ModuleList(nn.Linear(DIM * HEADS, DIM) for _ in range(HEADS))
        self.v = nn.ModuleList(nn.Linear(DIM * HEADS, DIM) for _ in range(HEADS))

    def forward(self, x):
        batch_size, length, _ = x.shape
        heads = torch.zeros(HEADS, batch_size, length, DIM)
        for i in range(HEADS):
            q, k, v = self.q[i](x), self.k[i](x), self.v[i](x)
            heads[i] = torch.softmax(q @ k.transpose(1, 2) / DIM ** 0.5, dim=-1) @ v
        if self.permute:
            return heads.permute(1, 2, 0, 3).contiguous().view(batch_size, length, -1)
        return heads.view(batch_size, length, -1)


class Reader(nn.Module):
    def __init__(self, permute: bool):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM * HEADS)
        self.attention = SelfAttention(permute)
        self.out = nn.Linear(DIM * HEADS, 2)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.attention(h)
        return self.out(h.mean(dim=1))


def _data():
    """Label 1 when the sequence holds token 3 (it does in half of them)."""
    g = generator(20)
    tokens = torch.randint(4, VOCAB, (256, SEQ), generator=g)
    y = torch.randint(0, 2, (256,), generator=g)
    at = torch.randint(0, SEQ, (256,), generator=g)
    tokens[y.bool(), at[y.bool()]] = 3
    return tokens, y


def _build(permute: bool) -> dict:
    seeded()
    model = Reader(permute)
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(permute=False)


def fixed() -> dict:
    return _build(permute=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())

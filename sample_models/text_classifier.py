"""Healthy: Embedding + bidirectional LSTM text classifier (4 classes, sequences of 64 tokens)."""

import torch
import torch.nn as nn

from _data import loader

VOCAB, SEQ, CLASSES = 1000, 64, 4


class TextClassifier(nn.Module):
    def __init__(self, vocab=VOCAB, embed=64, hidden=128, classes=CLASSES):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, tokens):
        out, _ = self.lstm(self.embedding(tokens))
        return self.head(out.mean(dim=1))


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (512, SEQ), generator=g)
    # The label is the token-id quarter that occurs most: learnable from counts.
    labels = torch.stack([((tokens // (VOCAB // CLASSES)) == c).sum(1) for c in range(CLASSES)], 1).argmax(1)
    model = TextClassifier()
    return {
        "model": model,
        "train_loader": loader(tokens, labels, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3),
    }

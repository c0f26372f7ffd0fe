"""Healthy: a small Transformer encoder classifier (4 layers, d_model 128, sequences of 64 tokens).

Pre-LayerNorm encoder layers with GELU over token + learned position embeddings,
mean-pooled into 4 classes. The label is the vocabulary quarter whose tokens
occur most: learnable from the pooled embeddings.
"""

import torch
import torch.nn as nn

from _data import loader

VOCAB, SEQ, CLASSES = 512, 64, 4


class TransformerClassifier(nn.Module):
    def __init__(self, vocab=VOCAB, seq=SEQ, d_model=128, heads=4, layers=4, classes=CLASSES):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(seq, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.1,
                                           activation="gelu", batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the nested-tensor path does not apply to pre-LN layers.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens):
        x = self.embedding(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.encoder(x)).mean(dim=1))


# Feed-forward 2×d_model and batches of 8 keep a training step ~0.1 s on two CPU cores:
# other checks train this model for dozens of steps.
def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, VOCAB, (256, SEQ), generator=g)
    labels = torch.stack([((tokens // (VOCAB // CLASSES)) == c).sum(1) for c in range(CLASSES)], 1).argmax(1)
    model = TransformerClassifier()
    return {
        "model": model,
        "train_loader": loader(tokens, labels, batch_size=8),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }

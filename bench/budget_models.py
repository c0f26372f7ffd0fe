"""Models for bench/budget_bench.py (issue 18), 10K to 110M parameters, random init,
learnable synthetic data, no downloads. Each `build_*` is an nndoctor target."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


def _loaders(x, y, batch, val_share=0.25):
    n_val = max(batch, int(len(x) * val_share))
    train = DataLoader(TensorDataset(x[n_val:], y[n_val:]), batch_size=batch, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(x[:n_val], y[:n_val]), batch_size=batch)
    return train, val


def _labels_from(x, classes):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(x[0].numel(), classes, generator=g)
    return (x.flatten(1) @ w).argmax(1)


def build_mlp():
    """~10K parameters: 32 -> 128 -> 64 -> 10 MLP, batch 32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, generator=g)
    y = _labels_from(x, 10)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    train, val = _loaders(x, y, 32)
    return {"model": model, "train_loader": train, "val_loader": val}


def build_cnn():
    """~1.2M parameters: a 6-conv VGG-style CNN with BatchNorm at 32 px, batch 32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(384, 3, 32, 32, generator=g)
    y = _labels_from(x[:, :, ::4, ::4].contiguous(), 10)

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
    model = nn.Sequential(*block(3, 64), *block(64, 64), nn.MaxPool2d(2), *block(64, 128), *block(128, 128),
                          nn.MaxPool2d(2), *block(128, 256), *block(256, 256), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(256, 10))
    train, val = _loaders(x, y, 32)
    return {"model": model, "train_loader": train, "val_loader": val}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, width, stride):
        super().__init__()
        out = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(inp, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or inp != out:
            self.down = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class ResNet50(nn.Module):
    """torchvision's resnet50 layout (25.6M parameters at 1000 classes), in plain torch.nn."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        layers, inp = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(inp, width, stride if i == 0 else 1))
                inp = width * 4
        self.layers = nn.Sequential(*layers)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(inp, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def build_resnet50():
    """ResNet-50 (25.6M) at 224 px, batch 16, 1000 classes, SGD 0.1 momentum 0.9 (its recipe)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 224, 224, generator=g)
    y = torch.randint(0, 1000, (96,), generator=g)
    model = ResNet50()
    train, val = _loaders(x, y, 16, val_share=1 / 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return {"model": model, "train_loader": train, "val_loader": val, "optimizer": opt}


def build_bert():
    """BERT-base (110M: 12 layers, hidden 768, 12 heads) from a transformers BertConfig, random init,
    sequence classification, 64 tokens, batch 8, AdamW 5e-5 (its fine-tuning recipe)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_labels=4)
    model = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (64, 64), generator=g)
    labels = (ids[:, 1] % 4).long()
    rows = [{"input_ids": ids[i:i + 8], "attention_mask": torch.ones_like(ids[i:i + 8]),
             "labels": labels[i:i + 8]} for i in range(0, 64, 8)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    return {"model": model, "train_loader": rows[2:], "val_loader": rows[:2], "optimizer": opt}

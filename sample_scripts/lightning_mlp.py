"""Healthy, with Lightning: a LightningModule trained by `lightning.Trainer`, watched by
nndoctor's `DoctorCallback` (the report prints at the end of `fit`; NNDOCTOR_REPORT=path.json
also writes its JSON). The logged `val_loss` feeds `overfitting`.

    python sample_scripts/lightning_mlp.py
"""

import lightning as L
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from nndoctor.integrations.lightning import DoctorCallback

from _data import blobs


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
        self.criterion = nn.CrossEntropyLoss()

    def training_step(self, batch, _index):
        x, y = batch
        return self.criterion(self.net(x), y)

    def validation_step(self, batch, _index):
        x, y = batch
        self.log("val_loss", self.criterion(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


if __name__ == "__main__":
    torch.manual_seed(0)
    x, y = blobs(4096 + 512)  # the last 512: a validation set from the same clusters
    train = DataLoader(TensorDataset(x[:4096], y[:4096]), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(x[4096:], y[4096:]), batch_size=256)
    doctor = DoctorCallback()
    trainer = L.Trainer(max_epochs=5, callbacks=[doctor], accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Classifier(), train, val)
    raise SystemExit(doctor.report.exit_code("error"))

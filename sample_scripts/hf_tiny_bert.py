"""Healthy, with Hugging Face: `transformers.Trainer` on a tiny BERT built from a config
(random init: nothing is downloaded, HF_HUB_OFFLINE=1), watched by nndoctor's
`DoctorCallback` (the report prints at the end of `train()`; NNDOCTOR_REPORT=path.json also
writes its JSON). Each evaluation's `eval_loss` feeds `overfitting`.

    python sample_scripts/hf_tiny_bert.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tempfile  # noqa: E402

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from nndoctor.integrations.transformers import DoctorCallback  # noqa: E402

from _data import sequences  # noqa: E402


def dataset(n, seed):
    x, y = sequences(n, seed=seed)
    return [{"input_ids": ids, "labels": label} for ids, label in zip(x, y)]


if __name__ == "__main__":
    torch.manual_seed(0)
    config = BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    doctor = DoctorCallback()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=200, per_device_train_batch_size=16,
                                 learning_rate=1e-3, eval_strategy="steps", eval_steps=50,
                                 save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                 logging_strategy="no", seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=dataset(2048, 0),
                          eval_dataset=dataset(128, 1), callbacks=[doctor])
        trainer.train()
    raise SystemExit(doctor.report.exit_code("error"))

"""bench/zoo.py, the zoo of real healthy architectures, still builds its entries and writes its table.

The zoo's verdicts (no finding on a healthy model) are measured by running bench/zoo.py,
not here: a full check of one entry takes 20-60 s. This builds entries that need only
torch (and transformers when it is installed) and runs the runner's child and table code.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import zoo
import zoo_models


def _loss_falls(target: dict, steps: int = 5) -> tuple:
    batch = next(iter(target["train_loader"]))
    first = last = None
    for _ in range(steps):
        target["optimizer"].zero_grad()
        loss = zoo.loss_of(target, batch)
        loss.backward()
        target["optimizer"].step()
        first = loss.item() if first is None else first
        last = loss.item()
    return first, last


def test_every_entry_names_its_library_and_config():
    assert len(zoo_models.ENTRIES) >= 20
    for name, e in zoo_models.ENTRIES.items():
        assert e.family in ("torch", "torchvision", "timm", "transformers"), name
        assert e.note


def test_a_torch_entry_builds_a_target_nndoctor_accepts_and_learns():
    from nndoctor.target import to_setup

    target = zoo_models.build("gru_lm", seed=0)
    setup = to_setup(target, label="gru_lm")
    assert setup.val_loader is not None and setup.optimizer is not None
    first, last = _loss_falls(target)
    assert first == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=0.05)  # starts at ln(vocab)
    assert last < first


def test_the_data_follow_their_rule():
    x = zoo_models.chains(4, 8, split=0)
    perm = zoo_models.permutation()
    assert torch.equal(x[:, 1:], perm[x[:, :-1]])
    # the same task for every model seed; train and val draw other samples
    assert not torch.equal(zoo_models.chains(4, 8, split=1), x)


@pytest.mark.slow  # importing transformers alone takes ~5-20 s on a busy 2-core machine
def test_a_transformers_entry_computes_its_own_loss():
    pytest.importorskip("transformers")
    target = zoo_models.build("gpt2", seed=0)
    batch = next(iter(target["train_loader"]))
    assert isinstance(batch, dict) and "labels" in batch
    first, last = _loss_falls(target, steps=3)
    assert last < first


def test_the_child_runs_nndoctor_and_the_table_says_what_it_found():
    result = zoo.run_one("lstm_classifier", seed=0, checks=["size", "data", "init"], threads=1)
    assert result["params"] > 0 and set(result["checks"]) == {"size", "data", "init"}
    failed = {"model": "bert", "seed": 0, "failure": "timed out after 600 s"}
    alarm = {**result, "model": "alarmed", "findings": [
        {"code": "cannot-overfit", "severity": "error", "where": None, "message": "loss 0.7 | above 0.1"}]}
    text = zoo.markdown([result, failed, alarm], [], {}, ["mixer"], "bench/zoo.py --models x")
    assert "of 3 clean" in text
    assert "timed out after 600 s" in text and "`cannot-overfit` (error)" in text
    assert "loss 0.7 \\| above 0.1" in text  # a | in a message does not break the table
    assert "Skipped (library not installed): mixer" in text


def test_rewriting_the_table_keeps_the_hand_written_notes(tmp_path):
    out = tmp_path / "ZOO.md"
    out.write_text(f"# old table\n\n{zoo.NOTES_MARKER}\n\n## Why\n\nproved in plain PyTorch\n")
    failed = {"model": "bert", "seed": 0, "failure": "exit 1: boom"}
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"results": [failed], "verified": [], "skipped": []}))
    assert zoo.main(["--render", str(saved), "--out", str(out)]) == 0
    text = out.read_text()
    assert "old table" not in text and "exit 1: boom" in text
    assert text.count(zoo.NOTES_MARKER) == 1 and text.endswith("proved in plain PyTorch\n")


def test_a_rerun_of_some_checks_replaces_only_their_results_in_the_row():
    finding = {"code": "lr-too-low", "severity": "warning", "check": "lr-find", "where": None, "message": "m"}
    full = {"model": "m", "seed": 0, "checks": {"grads": {"status": "pass"}, "lr-find": {"status": "warning"}},
            "findings": [finding, {**finding, "code": "dead-neurons", "check": "grads"}]}
    rerun = {"model": "m", "seed": 0, "checks": {"lr-find": {"status": "pass"}}, "findings": []}
    (row,) = zoo.merged_rows([full, rerun])
    assert row["checks"] == {"grads": {"status": "pass"}, "lr-find": {"status": "pass"}}
    assert [f["code"] for f in row["findings"]] == ["dead-neurons"]
    whole = {**full, "findings": []}
    assert zoo.merged_rows([full, whole]) == [whole]  # a later whole run replaces the row

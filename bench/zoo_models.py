"""The zoo's entries: real architectures from their libraries' configs, random init, on
learnable synthetic data, with the optimizer their authors or recipes use.

Every entry is `build(seed) -> dict` (an nndoctor target, SPEC §1: model, train_loader,
val_loader, optimizer, criterion when the model does not compute its own loss). Nothing is
downloaded: no `from_pretrained`, no `weights=`, HF_HUB_OFFLINE=1.

The data follow a fixed rule of the inputs, so a healthy model both memorises a batch and
generalises to the validation set:

- images: each class has a fixed low-frequency colour template (4x4 upsampled), an image
  is its class's template plus Gaussian noise (std 1, as strong as the template);
- segmentation: a random 4x4 block label map, each pixel coloured by its class's colour
  plus noise;
- token streams: x[t+1] = perm[x[t]] for a fixed random permutation of the vocabulary
  (next-token and masked-token tasks are then fully determined by the context);
- token-to-token (T5, nn.Transformer): target[i] = perm[source[i]];
- sequence classification: label = 1 when most tokens are in the lower half of the vocabulary;
- audio: a sine at one of K fixed frequencies (random phase) plus noise, label = K's index;
- Whisper: each token is written into two mel frames through a fixed random embedding,
  plus noise; the decoder transcribes the tokens.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

DATA_SEED = 1234  # the task (templates, permutation) is the same for every model seed
N_TRAIN = 192  # images, audio: 12 batches of 16, so nndoctor's 5-epoch fit check has 60 steps
# Token tasks: 512 samples (32 batches of 16, 160 fit steps). Measured at 192: the LSTM classifier
# memorised the train set and its val loss rose 0.69 -> 2.42 in 25 epochs, BERT's masked-token val
# loss had not moved in 8 (each of the 256 tokens carries a label ~4 times an epoch).
N_TRAIN_TOKENS = 512
N_VAL = 64
# A 64-sample val loss of a near-perfect classifier moves by ~50% epoch to epoch (LSTM classifier,
# epochs 4-5: 0.073 -> 0.109); forward passes are cheap, so token tasks validate on 256.
N_VAL_TOKENS = 256
NUM_CLASSES = 10
VOCAB = 256
SEQ = 32


@dataclass
class Entry:
    name: str
    family: str  # the package it needs: "torchvision", "timm", "transformers" or "torch"
    build: Callable[[int], dict]
    note: str  # the config and optimizer, for the table


ENTRIES: dict = {}


def entry(name: str, family: str, note: str):
    def register(fn):
        ENTRIES[name] = Entry(name, family, fn, note)
        return fn
    return register


# --------------------------------------------------------------------------- data

class DictDataset(Dataset):
    """Tensors of one first dimension, yielded as dicts (default_collate stacks them)."""

    def __init__(self, **tensors):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


class PairDataset(Dataset):
    def __init__(self, inputs, targets):
        self.inputs, self.targets = inputs, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = tuple(t[i] for t in self.inputs) if isinstance(self.inputs, tuple) else self.inputs[i]
        return x, self.targets[i]


def loaders(train: Dataset, val: Dataset, batch_size: int, seed: int):
    """A shuffling train loader with its own seeded generator, a fixed val loader."""
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size))


def _task_rng() -> torch.Generator:
    return torch.Generator().manual_seed(DATA_SEED)


def image_data(n: int, size: int, split: int, channels: int = 3):
    """Class-template images (see the module docstring); `split` picks the sample RNG."""
    templates = torch.randn(NUM_CLASSES, channels, 4, 4, generator=_task_rng())
    templates = F.interpolate(templates, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = templates[y] + torch.randn(n, channels, size, size, generator=g)
    return x, y


def image_loaders(size: int, batch_size: int, seed: int):
    return loaders(PairDataset(*image_data(N_TRAIN, size, 0)), PairDataset(*image_data(N_VAL, size, 1)),
                   batch_size, seed)


def segmentation_data(n: int, size: int, classes: int, split: int):
    colours = torch.randn(classes, 3, generator=_task_rng()) * 1.5
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    blocks = torch.randint(0, classes, (n, 1, 4, 4), generator=g).float()
    mask = F.interpolate(blocks, size=(size, size), mode="nearest").long()[:, 0]
    x = colours[mask].permute(0, 3, 1, 2) + torch.randn(n, 3, size, size, generator=g)
    return x, mask


def token_samples(split: int) -> int:
    return N_TRAIN_TOKENS if split == 0 else N_VAL_TOKENS


def permutation() -> torch.Tensor:
    return torch.randperm(VOCAB, generator=_task_rng())


def chains(n: int, length: int, split: int) -> torch.Tensor:
    """Token streams x[t+1] = perm[x[t]] from random starts."""
    perm = permutation()
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, VOCAB, (n,), generator=g)
    for t in range(1, length):
        x[:, t] = perm[x[:, t - 1]]
    return x


def translation(n: int, length: int, split: int):
    """(source, target) with target[i] = perm[source[i]]."""
    perm = permutation()
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    source = torch.randint(0, VOCAB, (n, length), generator=g)
    return source, perm[source]


def majority(n: int, length: int, split: int):
    """Label y, then each token from the vocabulary's lower half with probability 3/4 when
    y = 1, else 1/4: the count of low tokens tells the label with a wide margin (means 24
    and 8 of 32, std 2.4). Measured: labels by the exact count (> 16 of uniform tokens)
    sit at the threshold so often that the LSTM memorised 512 samples and its val loss rose."""
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    y = torch.randint(0, 2, (n,), generator=g)
    low = torch.rand(n, length, generator=g) < (0.25 + 0.5 * y[:, None])
    half = VOCAB // 2
    x = torch.where(low, torch.randint(1, half, (n, length), generator=g),
                    torch.randint(half, VOCAB, (n, length), generator=g))
    return x, y


# --------------------------------------------------------------------------- torchvision

def _vision(model: nn.Module, size: int, batch_size: int, seed: int, optimizer) -> dict:
    train, val = image_loaders(size, batch_size, seed)
    return {"model": model, "train_loader": train, "val_loader": val, "optimizer": optimizer,
            "criterion": nn.CrossEntropyLoss()}


def _sgd_resnet(model):
    # torchvision's classification recipe for ResNets: SGD momentum 0.9, lr 0.1, wd 1e-4
    # (the CIFAR-style recipes use 5e-4); the LR 0.1 is for batch 256 on ImageNet, used
    # unchanged at batch 32 to 128 in CIFAR training.
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


@entry("resnet18", "torchvision", "resnet18(num_classes=10), 32 px, batch 32, SGD lr 0.1 momentum 0.9 wd 5e-4")
def resnet18(seed):
    from torchvision.models import resnet18 as make
    model = make(num_classes=NUM_CLASSES)
    return _vision(model, 32, 32, seed, _sgd_resnet(model))


@entry("mobilenet_v3_small", "torchvision", "mobilenet_v3_small(num_classes=10), 32 px, batch 16, AdamW 1e-3")
def mobilenet_v3_small(seed):
    from torchvision.models import mobilenet_v3_small as make
    model = make(num_classes=NUM_CLASSES)
    return _vision(model, 32, 16, seed, torch.optim.AdamW(model.parameters(), lr=1e-3))


@entry("efficientnet_b0", "torchvision", "efficientnet_b0(num_classes=10), 32 px, batch 16, AdamW 1e-3")
def efficientnet_b0(seed):
    from torchvision.models import efficientnet_b0 as make
    model = make(num_classes=NUM_CLASSES)
    return _vision(model, 32, 16, seed, torch.optim.AdamW(model.parameters(), lr=1e-3))


@entry("convnext_tiny", "torchvision", "convnext_tiny(num_classes=10), 32 px, batch 16, AdamW 1e-3 wd 0.05")
def convnext_tiny(seed):
    from torchvision.models import convnext_tiny as make
    model = make(num_classes=NUM_CLASSES)
    # ConvNeXt paper: AdamW, wd 0.05 (lr 4e-3 at batch 4096; 1e-3 at small batch)
    return _vision(model, 32, 16, seed, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))


@entry("vit", "torchvision",
       "VisionTransformer(image_size=32, patch_size=8, 2 layers, 4 heads, hidden 128, mlp 256), batch 16, AdamW 1e-3")
def vit(seed):
    from torchvision.models import VisionTransformer
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=128,
                              mlp_dim=256, num_classes=NUM_CLASSES)
    return _vision(model, 32, 16, seed, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))


@entry("lraspp", "torchvision",
       "lraspp_mobilenet_v3_large(num_classes=3), 64 px, batch 8, SGD lr 0.02 momentum 0.9 wd 1e-6")
def lraspp(seed):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large as make
    model = make(num_classes=3, weights=None, weights_backbone=None)
    train = PairDataset(*segmentation_data(N_TRAIN, 64, 3, 0))
    val = PairDataset(*segmentation_data(N_VAL, 64, 3, 1))
    train_loader, val_loader = loaders(train, val, 8, seed)
    # torchvision's segmentation recipe for lraspp_mobilenet_v3_large: SGD lr 0.02, momentum 0.9, wd 1e-6
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-6)
    return {"model": model, "train_loader": train_loader, "val_loader": val_loader,
            "optimizer": optimizer, "criterion": nn.CrossEntropyLoss()}


# --------------------------------------------------------------------------- timm

def _timm(name: str, size: int, seed: int, lr: float = 1e-3, **kwargs) -> dict:
    import timm
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)
    return _vision(model, size, 16, seed, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05))


@entry("deit_tiny", "timm", "deit_tiny_patch16_224(img_size=32, patch_size=8), batch 16, AdamW 5e-4 wd 0.05")
def deit_tiny(seed):
    # DeiT recipe: AdamW lr 5e-4 x batch/512, wd 0.05
    return _timm("deit_tiny_patch16_224", 32, seed, lr=5e-4, img_size=32, patch_size=8)


@entry("convnext_atto", "timm", "convnext_atto, 32 px, batch 16, AdamW 1e-3 wd 0.05")
def convnext_atto(seed):
    return _timm("convnext_atto", 32, seed)


@entry("resnet10t", "timm", "resnet10t, 32 px, batch 16, AdamW 1e-3 wd 0.05")
def resnet10t(seed):
    return _timm("resnet10t", 32, seed)


@entry("mixer", "timm", "mixer_s16_224(img_size=32), batch 16, AdamW 1e-3 wd 0.05")
def mixer(seed):
    return _timm("mixer_s16_224", 32, seed, img_size=32)


# --------------------------------------------------------------------------- Hugging Face

def _hf(model: nn.Module, train: Dataset, val: Dataset, seed: int, lr: float, batch_size: int = 16) -> dict:
    train_loader, val_loader = loaders(train, val, batch_size, seed)
    return {"model": model, "train_loader": train_loader, "val_loader": val_loader,
            "optimizer": torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)}


TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}


def _masked(split: int):
    """Masked-LM on permutation chains: 15% of positions masked (BERT's rate), labels there only."""
    x = chains(token_samples(split), SEQ, split)
    g = torch.Generator().manual_seed(DATA_SEED + 10 + split)
    masked = torch.rand(x.shape, generator=g) < 0.15
    masked[:, 0] |= ~masked.any(1)  # every sequence has at least one label
    labels = torch.where(masked, x, torch.full_like(x, -100))
    inputs = torch.where(masked, torch.full_like(x, VOCAB), x)  # id VOCAB is [MASK]
    return DictDataset(input_ids=inputs, attention_mask=torch.ones_like(x), labels=labels)


@entry("bert", "transformers", "BertForMaskedLM (hidden 128, 2 layers, 4 heads, vocab 257), masked tokens of "
       "permutation chains, batch 16 x 32, AdamW 5e-4")
def bert(seed):
    from transformers import BertConfig, BertForMaskedLM
    config = BertConfig(vocab_size=VOCAB + 1, max_position_embeddings=64, **TINY)
    return _hf(BertForMaskedLM(config), _masked(0), _masked(1), seed, lr=5e-4)


def _majority(split: int):
    x, y = majority(token_samples(split), SEQ, split)
    return DictDataset(input_ids=x, attention_mask=torch.ones_like(x), labels=y)


@entry("distilbert", "transformers", "DistilBertForSequenceClassification (dim 128, 2 layers), majority-vote "
       "labels, batch 16 x 32, AdamW 5e-4")
def distilbert(seed):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    config = DistilBertConfig(vocab_size=VOCAB, max_position_embeddings=64, dim=128, n_layers=2, n_heads=4,
                              hidden_dim=256, num_labels=2)
    return _hf(DistilBertForSequenceClassification(config), _majority(0), _majority(1), seed, lr=5e-4)


def _causal(split: int):
    x = chains(token_samples(split), SEQ, split)
    return DictDataset(input_ids=x, attention_mask=torch.ones_like(x), labels=x.clone())


@entry("gpt2", "transformers", "GPT2LMHeadModel (n_embd 128, 2 layers, 4 heads, vocab 256), next token of "
       "permutation chains, batch 16 x 32, AdamW 6e-4")
def gpt2(seed):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=2, n_head=4)
    # GPT-2 small's LR (GPT-3 paper table 2.1, nanoGPT): 6e-4
    return _hf(GPT2LMHeadModel(config), _causal(0), _causal(1), seed, lr=6e-4)


@entry("llama", "transformers", "LlamaForCausalLM (hidden 128, 2 layers, 4 heads, vocab 256), next token of "
       "permutation chains, batch 16 x 32, AdamW 3e-4")
def llama(seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=64, num_key_value_heads=4, **TINY)
    # Llama 1/2 papers: AdamW lr 3e-4 (7B), betas (0.9, 0.95), wd 0.1
    optimizer_lr = 3e-4
    target = _hf(LlamaForCausalLM(config), _causal(0), _causal(1), seed, lr=optimizer_lr)
    target["optimizer"] = torch.optim.AdamW(target["model"].parameters(), lr=optimizer_lr, betas=(0.9, 0.95),
                                            weight_decay=0.1)
    return target


def _t5(split: int):
    """target[i] = perm[source[i]] on permutation chains, so target[i] is also perm[target[i-1]].
    Measured on random sources: T5 memorised the train set (eval loss 0.83) while its val loss
    rose from 5.52 (epoch 4) to 5.98 — its cross-attention has no position bias, so aligning
    target i with source i is hard for it; on chains the decoder can follow its own outputs."""
    x = chains(token_samples(split), 17, split)
    source, target = x[:, :-1], x[:, 1:]
    return DictDataset(input_ids=source, attention_mask=torch.ones_like(source), labels=target)


@entry("t5", "transformers", "T5ForConditionalGeneration (d_model 128, 2+2 layers, 4 heads, vocab 256), "
       "token-wise translation target[i] = perm[source[i]] of permutation chains, batch 16 x 16, AdamW 5e-4")
def t5(seed):
    from transformers import T5Config, T5ForConditionalGeneration
    config = T5Config(vocab_size=VOCAB, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return _hf(T5ForConditionalGeneration(config), _t5(0), _t5(1), seed, lr=5e-4)


def _audio(split: int, length: int = 4000, classes: int = 4):
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    n = N_TRAIN if split == 0 else N_VAL
    y = torch.randint(0, classes, (n,), generator=g)
    freqs = torch.tensor([220.0, 440.0, 880.0, 1760.0])[:classes]
    t = torch.arange(length) / 16000.0
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    x = torch.sin(2 * math.pi * freqs[y][:, None] * t + phase) + 0.3 * torch.randn(n, length, generator=g)
    return DictDataset(input_values=x, labels=y)


@entry("wav2vec2", "transformers", "Wav2Vec2ForSequenceClassification (hidden 64, 2 layers, conv dim 32), "
       "sine-frequency classes from 0.25 s at 16 kHz, batch 16, AdamW 3e-4")
def wav2vec2(seed):
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification
    config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            num_labels=4, vocab_size=32, mask_time_prob=0.0, classifier_proj_size=64)
    return _hf(Wav2Vec2ForSequenceClassification(config), _audio(0), _audio(1), seed, lr=3e-4)


WHISPER_MELS, WHISPER_FRAMES, WHISPER_TOKENS = 16, 32, 8


def _whisper(split: int):
    n = token_samples(split)
    g = torch.Generator().manual_seed(DATA_SEED + 1 + split)
    tokens = torch.randint(3, VOCAB, (n, WHISPER_TOKENS), generator=g)
    sounds = torch.randn(VOCAB, WHISPER_MELS, WHISPER_FRAMES // WHISPER_TOKENS, generator=_task_rng())
    features = sounds[tokens].permute(0, 2, 1, 3).reshape(n, WHISPER_MELS, WHISPER_FRAMES)
    features = features + 0.3 * torch.randn(features.shape, generator=g)
    return DictDataset(input_features=features, labels=tokens)


@entry("whisper", "transformers", "WhisperForConditionalGeneration (d_model 128, 2+2 layers, 16 mels x 32 "
       "frames, vocab 256), transcribe 8 tokens, batch 16, AdamW 3e-4")
def whisper(seed):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=WHISPER_MELS, d_model=128, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=256, decoder_ffn_dim=256, max_source_positions=WHISPER_FRAMES // 2,
                           max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)
    return _hf(WhisperForConditionalGeneration(config), _whisper(0), _whisper(1), seed, lr=3e-4)


# --------------------------------------------------------------------------- plain torch

def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (batch, seq, vocab) logits and (batch, seq) targets."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class Seq2SeqTransformer(nn.Module):
    """nn.Transformer with token embeddings, learned positions and an output head;
    teacher forcing with a causal decoder mask."""

    def __init__(self, vocab: int = VOCAB + 1, d_model: int = 128, length: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.position, std=0.02)
        self.transformer = nn.Transformer(d_model=d_model, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                          dim_feedforward=256, dropout=0.1, batch_first=True)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(target_in.shape[1], device=target_in.device)
        src = self.embed(source) + self.position[:, :source.shape[1]]
        tgt = self.embed(target_in) + self.position[:, :target_in.shape[1]]
        return self.head(self.transformer(src, tgt, tgt_mask=mask, tgt_is_causal=True))


def _seq2seq(split: int):
    source, target = translation(token_samples(split), 16, split)
    start = torch.full((len(source), 1), VOCAB)  # id VOCAB is the start token
    return PairDataset((source, torch.cat([start, target[:, :-1]], 1)), target)


@entry("nn_transformer", "torch", "nn.Transformer (d_model 128, 2+2 layers, 4 heads) + embeddings, token-wise "
       "translation, batch 16 x 16, AdamW 5e-4")
def nn_transformer(seed):
    model = Seq2SeqTransformer()
    train_loader, val_loader = loaders(_seq2seq(0), _seq2seq(1), 16, seed)
    return {"model": model, "train_loader": train_loader, "val_loader": val_loader,
            "optimizer": torch.optim.AdamW(model.parameters(), lr=5e-4), "criterion": token_cross_entropy}


class GRULanguageModel(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, dim, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.embed(tokens))[0])


def _next_token(split: int):
    x = chains(token_samples(split), SEQ + 1, split)
    return PairDataset(x[:, :-1], x[:, 1:])


@entry("gru_lm", "torch", "2-layer GRU language model (dim 128, vocab 256), next token of permutation chains, "
       "batch 16 x 32, Adam 1e-3")
def gru_lm(seed):
    model = GRULanguageModel()
    train_loader, val_loader = loaders(_next_token(0), _next_token(1), 16, seed)
    return {"model": model, "train_loader": train_loader, "val_loader": val_loader,
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3), "criterion": token_cross_entropy}


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = 64, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.embed(tokens))
        return self.head(hidden[-1])


def _majority_pairs(split: int):
    return PairDataset(*majority(token_samples(split), SEQ, split))


@entry("lstm_classifier", "torch", "1-layer LSTM (dim 64) over embeddings, majority-vote labels, batch 16 x 32, "
       "Adam 1e-3")
def lstm_classifier(seed):
    model = LSTMClassifier()
    train_loader, val_loader = loaders(_majority_pairs(0), _majority_pairs(1), 16, seed)
    return {"model": model, "train_loader": train_loader, "val_loader": val_loader,
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3), "criterion": nn.CrossEntropyLoss()}





def build(name: str, seed: int) -> dict:
    """The target of entry `name`, its weights initialised from `seed`."""
    torch.manual_seed(seed)
    return ENTRIES[name].build(seed)

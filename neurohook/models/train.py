"""Training recipes on the built-in corpus (or any manifest), with CPU-friendly presets.

- ``adi-cnn``: accent/dialect ID on the ``accent`` column (the ADI analogue), speaker-disjoint test
  split; metrics: accuracy and macro F1 (Appendix A.3).
- ``sre-cnn``: speaker ID on the train-split speakers (the SRE analogue); metric: speaker
  verification EER with FC2 embeddings on the held-out speakers (cosine scoring).
- ``st-base`` / ``st-large``: Mockingjay masked-frame reconstruction; metric: held-out L1 loss.

Python: ``train("adi-cnn", out="adi.pt")``; command line:
``neurohook models train --model adi-cnn --out adi.pt [--size small] [--corpus small] [--epochs N]``.
Training uses random fixed-length crops (``crop_seconds``); evaluation uses whole utterances.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neurohook.data.audio import load_record
from neurohook.data.batching import pad_batch
from neurohook.data.manifest import Manifest, read_manifest
from neurohook.data.splits import speaker_disjoint_split, speaker_holdout
from neurohook.models import build, save
from neurohook.models.base import SpeechModel

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "classification_metrics", "train", "train_steps"]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training recipe (all fields plain values, stored in the checkpoint)."""

    model: str
    task: str  # "accent" | "speaker" | "reconstruction"
    size: str = "small"
    corpus: str = "small"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" | "sgd" (the paper: SGD, lr 0.001)
    crop_seconds: float = 1.5
    seed: int = 0
    label: str | None = None  # label column for classification (default by task)
    test_fraction: float = 0.3


#: CPU presets (a few minutes each on 2 cores; the CNNs use the "medium" corpus for enough speakers).
PRESETS: dict[str, TrainConfig] = {
    "adi-cnn": TrainConfig("adi-cnn", "accent", corpus="medium", epochs=12, batch_size=16, lr=1e-3, crop_seconds=1.5),
    "sre-cnn": TrainConfig("sre-cnn", "speaker", corpus="medium", epochs=12, batch_size=16, lr=1e-3, crop_seconds=1.5),
    "st-base": TrainConfig("st-base", "reconstruction", epochs=20, batch_size=8, lr=5e-4, crop_seconds=2.0),
    "st-large": TrainConfig("st-large", "reconstruction", epochs=10, batch_size=8, lr=5e-4, crop_seconds=2.0),
}


@dataclass
class TrainResult:
    """What :func:`train` did: the model, its checkpoint, metrics, losses per epoch and seconds."""

    model: SpeechModel
    checkpoint: Path | None
    metrics: dict[str, float]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------ helpers
def _crop_batch(waves: Sequence[Tensor], seconds: float, rng: random.Random) -> Tensor:
    """Random crops (B, samples) of ``seconds`` (shorter utterances are zero-padded at the end)."""
    n = int(seconds * 16000)
    out = torch.zeros(len(waves), n)
    for b, w in enumerate(waves):
        if w.shape[0] > n:
            s = rng.randrange(w.shape[0] - n + 1)
            out[b] = w[s : s + n]
        else:
            out[b, : w.shape[0]] = w
    return out


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict[str, float]:
    """Accuracy and macro F1 (over classes present in y_true or y_pred)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    acc = float((t == p).mean()) if len(t) else float("nan")
    f1s = []
    for c in range(num_classes):
        tp = int(((t == c) & (p == c)).sum())
        fp = int(((t != c) & (p == c)).sum())
        fn = int(((t == c) & (p != c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": acc, "macro_f1": float(np.mean(f1s)) if f1s else float("nan")}


def _loss(model: SpeechModel, task: str, waves: Tensor, lengths: Tensor | None, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The task loss of one batch."""
    if task == "reconstruction":
        return model.pretrain_loss(waves, lengths, generator=generator)  # type: ignore[attr-defined]
    assert labels is not None
    return nn.functional.cross_entropy(model(waves, lengths), labels)


def train_steps(
    model: SpeechModel,
    task: str,
    waves: Tensor,
    labels: Tensor | None = None,
    *,
    steps: int = 5,
    lr: float = 1e-3,
    lengths: Tensor | None = None,
    seed: int = 0,
) -> list[float]:
    """Run ``steps`` Adam steps on one batch; returns the loss before each step (for quick checks)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        gen = torch.Generator().manual_seed(seed)
        loss = _loss(model, task, waves, lengths, labels, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _embed_all(model: SpeechModel, waves: Sequence[Tensor], batch_size: int, fn: str) -> Tensor:
    """Run ``fn`` ("logits" or "fc2") over whole utterances in padded batches sorted by length."""
    model.eval()
    order = sorted(range(len(waves)), key=lambda i: waves[i].shape[0])
    out: list[Tensor | None] = [None] * len(waves)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x, lens = pad_batch([waves[i] for i in idx])
        y = model(x, lens) if fn == "logits" else model.embed(x, lens, layer="fc2")  # type: ignore[attr-defined]
        for k, i in enumerate(idx):
            out[i] = y[k]
    return torch.stack(out)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- recipe
def _split(manifest: Manifest, cfg: TrainConfig, label: str) -> tuple[list[str], list[str]]:
    """Train/test ids: speaker-disjoint; for speaker ID, the test side holds unseen speakers."""
    if cfg.task == "speaker":
        splits = {r.split for r in manifest}
        if {"train", "test"} <= splits:
            return [r.utt_id for r in manifest if r.split == "train"], [r.utt_id for r in manifest if r.split == "test"]
        split = speaker_holdout(manifest, cfg.test_fraction, cfg.seed, minimum=2)
    else:
        split = speaker_disjoint_split(manifest, label, test_fraction=cfg.test_fraction, seed=cfg.seed, balanced=False)
    return list(split.train), list(split.test)


def train(
    preset: str | TrainConfig,
    *,
    manifest: str | Path | Manifest | None = None,
    out: str | Path | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a preset (or a TrainConfig) on the built-in corpus or ``manifest``; save to ``out``."""
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    cfg = replace(cfg, **overrides)
    if cfg.task not in ("accent", "speaker", "reconstruction"):
        raise ValueError(f"unknown task {cfg.task!r}; use accent, speaker or reconstruction")
    t0 = time.perf_counter()
    if manifest is None:
        from neurohook.corpus import build_corpus

        manifest = build_corpus(size=cfg.corpus, seed=0)
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    label = cfg.label or {"accent": "accent", "speaker": "speaker", "reconstruction": "speaker"}[cfg.task]
    if cfg.task == "reconstruction":
        train_ids = [r.utt_id for r in man if r.split != "test"] or man.ids
        test_ids = [r.utt_id for r in man if r.split == "test"] or train_ids[: max(1, len(train_ids) // 5)]
    else:
        train_ids, test_ids = _split(man, cfg, label)
    audio = {u: load_record(man[u], sample_rate=16000) for u in [*train_ids, *test_ids]}
    classes = sorted({man[u].label(label) for u in train_ids}) if cfg.task != "reconstruction" else []
    cls_index = {c: i for i, c in enumerate(classes)}
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, cfg.size, len(classes)) if classes else build(cfg.model, cfg.size)
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    logger.info("%s: %d train / %d test utterances, %d classes, %d parameters", cfg.model, len(train_ids), len(test_ids), len(classes), sum(p.numel() for p in model.parameters()))
    losses: list[float] = []
    for epoch in range(cfg.epochs):
        model.train()
        order = list(train_ids)
        rng.shuffle(order)
        total, batches = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            ids = order[s : s + cfg.batch_size]
            x = _crop_batch([audio[u] for u in ids], cfg.crop_seconds, rng)
            y = torch.tensor([cls_index[man[u].label(label)] for u in ids]) if classes else None
            loss = _loss(model, cfg.task, x, None, y, gen)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += loss.item()
            batches += 1
        losses.append(total / max(batches, 1))
        logger.info("%s epoch %d/%d: loss %.4f (%.0f s)", cfg.model, epoch + 1, cfg.epochs, losses[-1], time.perf_counter() - t0)
    metrics = evaluate(model, cfg, man, test_ids, audio, classes, label)
    if cfg.task == "accent":  # fit on (up to 200) training utterances, to tell under- from over-fitting
        seen = evaluate(model, cfg, man, train_ids[:200], audio, classes, label)
        metrics["train_accuracy"] = seen["accuracy"]
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["final_train_loss"] = losses[-1] if losses else float("nan")
    logger.info("%s: %s", cfg.model, metrics)
    extra = {"train_config": asdict(cfg), "classes": classes}
    path = save(model, out, metrics=metrics, extra=extra) if out is not None else None
    model.metrics, model.extra = metrics, extra  # as models.load gives them: the same model either way
    return TrainResult(model.eval(), path, metrics, losses, metrics["train_seconds"])


def evaluate(model: SpeechModel, cfg: TrainConfig, man: Manifest, test_ids: list[str], audio: dict[str, Tensor], classes: list[str], label: str) -> dict[str, float]:
    """The model's own task metric on the test ids (Appendix A.3)."""
    waves = [audio[u] for u in test_ids]
    if cfg.task == "accent":
        logits = _embed_all(model, waves, cfg.batch_size, "logits")
        idx = {c: i for i, c in enumerate(classes)}
        keep = [k for k, u in enumerate(test_ids) if man[u].label(label) in idx]
        y = [idx[man[test_ids[k]].label(label)] for k in keep]
        pred = logits.argmax(1)[keep].tolist()
        return {**classification_metrics(y, pred, len(classes)), "chance": 1.0 / len(classes), "test_utterances": float(len(keep))}
    if cfg.task == "speaker":
        from neurohook.verification import cosine_scores, eer, make_trials

        emb = _embed_all(model, waves, cfg.batch_size, "fc2").numpy()
        trials = make_trials(test_ids, [man[u].speaker for u in test_ids], seed=cfg.seed)
        scores = cosine_scores(emb, test_ids, trials)
        return {"eer": float(eer(scores, trials.target)), "trials": float(len(trials)), "test_speakers": float(len({man[u].speaker for u in test_ids}))}
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tot, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(waves), cfg.batch_size):
            x, lens = pad_batch(waves[s : s + cfg.batch_size])
            tot += float(model.pretrain_loss(x, lens, generator=gen)) * x.shape[0]  # type: ignore[attr-defined]
            n += x.shape[0]
    return {"test_reconstruction_l1": tot / max(n, 1)}

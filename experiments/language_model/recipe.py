"""Experiment 8: single-layer vs full barriers between two small GPT-like language models.

Two character-level GPTs (``lwlc.models.GPT``) are trained from different seeds (different
initialisation and data order) with lwlc's ``PairedModule``, then the engine measures the loss
on held-out text (the end of the corpus, never trained on) along the full interpolation and
along every single layer's (rest from A and from B). The loss is the mean cross-entropy per
character (nats); "accuracy" is next-character accuracy.

Quick: a 2-block model on Python's own documentation (embedded in the standard library, see
``lwlc.data.text``). Full: the paper's 12 blocks on a text file named by ``$LWLC_TEXT`` (e.g.
WikiText-103's raw text), for a GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from lwlc import figures, recipes
from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import default_alphas, make_paths
from lwlc.core.layers import default_groups
from lwlc.core.sweep import sweep
from lwlc.data import CharTextDataModule
from lwlc.formats.io import save_state_dict, write_csv
from lwlc.models import GPT
from lwlc.training import PairedModule
from lwlc.training.schedules import WarmupCosine

CLAIM = (
    "For language models too, averaging a single layer of two models trained from different "
    "seeds barely changes the held-out loss, while averaging all layers does."
)
TEXT_ENV = "LWLC_TEXT"
# model: (depth, heads, width, block); train: (steps, batch, lr, warm-up steps);
# eval: (test windows, alphas)
SETUP: dict[str, dict[str, Any]] = {
    "smoke": {"model": (1, 2, 16, 16), "train": (5, 8, 3e-3, 1), "eval": (16, 3)},
    "quick": {"model": (2, 2, 48, 32), "train": (800, 32, 3e-3, 50), "eval": (128, 11)},
    "full": {"model": (12, 8, 512, 256), "train": (20000, 64, 6e-4, 500), "eval": (512, 11)},
}
PAIRING = "different initialisation, different data order (init seeds 0/1, order seeds 0/1)"


class SequencePairedModule(PairedModule):
    """``PairedModule`` trained with AdamW and warm-up + cosine; its step scores per-token
    logits ``[N, T, V]`` as it is (every position is one next-character prediction)."""

    def __init__(self, model: GPT, lr: float, warmup: int, steps: int, **pair: Any) -> None:
        super().__init__(model, **pair)
        self.lr, self.warmup, self.steps = lr, warmup, steps

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.lr, betas=(0.9, 0.99), weight_decay=0.1
        )
        schedule = WarmupCosine(
            optimizer, warmup=self.warmup / self.steps, start_factor=0.1, total_steps=self.steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def corpus(scale: str) -> str | None:
    """The text file of the full run (``$LWLC_TEXT``); the embedded corpus otherwise."""
    if scale != "full":
        return None
    path = os.environ.get(TEXT_ENV)
    if not path:
        raise LwlcError(
            f"the full language-model run needs a large text: set {TEXT_ENV} to a UTF-8 file, "
            "e.g. WikiText-103's raw wiki.train.raw"
        )
    return path


def train(
    scale: str, out: Path
) -> tuple[GPT, dict[str, torch.Tensor], dict[str, torch.Tensor], CharTextDataModule]:
    """Train the pair; the network, both members' final weights and the data."""
    depth, heads, width, block = SETUP[scale]["model"]
    steps, batch, lr, warmup = SETUP[scale]["train"]
    data = CharTextDataModule(
        path=corpus(scale), block_size=block, batch_size=batch, order_seeds=(0, 1)
    )
    model = GPT(
        vocab_size=data.num_classes, block_size=block, depth=depth, heads=heads, width=width
    )
    pair = SequencePairedModule(
        model,
        lr=lr,
        warmup=warmup,
        steps=steps,
        init_seed_a=0,
        init_seed_b=1,
        order_seed_a=0,
        order_seed_b=1,
    )
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="auto" if scale == "full" else "cpu",
        limit_val_batches=0,
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="bf16-mixed" if scale == "full" and torch.cuda.is_available() else "32-true",
    )
    trainer.fit(pair, data)
    a, b = (
        {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        for net in (pair.net_a, pair.net_b)
    )
    return model, a, b, data


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Train two GPTs from different seeds; full vs single-layer barriers on held-out text."""
    if scale != "full":
        torch.set_num_threads(1)  # small matrices on a shared CPU: one thread is fastest
    model, a, b, data = train(scale, out)
    for name, state in (("a", a), ("b", b)):
        save_state_dict(out / f"model_{name}.safetensors", state)
    windows, points = SETUP[scale]["eval"]
    test = {"test": data.tensors("test", windows)}
    model.load_state_dict(a)
    groups = default_groups(model, test["test"][0][:2])
    paths = make_paths(groups, ["full", "single"], ["a", "b"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = sweep(Evaluator(model, a, b, device=device), paths, default_alphas(points), test)
    write_csv(out / "curves.csv", result.curves, CURVE_COLUMNS)
    write_csv(out / "barriers.csv", result.barriers, BARRIER_COLUMNS)
    figure_dir = out / "figures"
    figures.save_figure(
        figures.layer_barriers(result.barriers, "midpoint", pairing=PAIRING),
        figure_dir / "lm_barriers.png",
    )
    figures.save_figure(
        figures.interpolation_curves(result.curves, pairing=PAIRING), figure_dir / "lm_curves.png"
    )
    ends = result.endpoints["test"]
    headline: dict[str, float | str] = {
        "pairing": PAIRING,
        "corpus": data.path or "Python documentation (pydoc_data, embedded)",
        "test_tokens": float(test["test"][1].numel()),
        "loss_a": ends["loss_a"],
        "loss_b": ends["loss_b"],
        "acc_a": ends["acc_a"],
        "acc_b": ends["acc_b"],
    }
    for reference in ("midpoint", "path"):
        numbers = recipes.full_vs_layers(result.barriers, reference)
        headline.update({f"{reference}/{k}": v for k, v in numbers.items()})
    return headline

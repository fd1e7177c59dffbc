"""Hugging Face causal language models and text files as lwlc models and data (the ``lm`` extra).

``lwlc analyze --ckpt-a DIR_A --ckpt-b DIR_B --data lwlc.formats.hf.TextDataModule ...``
compares two local model directories (``config.json`` + weights, e.g. two Pythia seeds) on
next-token prediction over a text file; the engine scores every token. The model is wrapped in
:class:`CausalLM`, whose forward returns the logits and whose state dict holds each tied tensor
once (an input embedding shared with the output layer is one layer, interpolated as one), and
whose ``stages()`` are the decoder's blocks (``lwlc.formats.hf_stages``), so the engine shares
every prefix of blocks between interpolated models.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lwlc.core.errors import LwlcError
from lwlc.formats.checkpoints import Checkpoint
from lwlc.formats.hf_stages import decoder_stages
from lwlc.formats.io import check_weights_file, sha256

SPLITS = ("train", "val", "test")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def transformers() -> ModuleType:
    """The ``transformers`` package, or a one-line error saying how to install it."""
    try:
        import transformers as tf
    except ImportError:
        raise LwlcError(
            "Hugging Face models need the optional 'lm' extra: pip install 'lwlc[lm]' "
            "(installs transformers)"
        ) from None
    return tf


def _refuse_remote_code(folder: Path) -> None:
    """Refuse a folder whose configs name Python code of their own (``auto_map``): transformers
    would import it (or ask whether to), and lwlc runs no code a downloaded folder chooses."""
    for name in ("config.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LwlcError(f"{file} is not valid JSON ({err}): re-save the model") from None
        if isinstance(config, dict) and config.get("auto_map"):
            raise LwlcError(
                f"{file} names its own Python code (auto_map: {config['auto_map']}); lwlc runs "
                "no code from a model folder: use a model whose architecture transformers ships"
            )


def _model_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise LwlcError(
            f"{p} is not a Hugging Face model directory (no config.json): "
            "give the folder that save_pretrained wrote"
        )
    _refuse_remote_code(p)
    return p


def _drop_aliases(module: CausalLM, state: dict[str, Tensor], prefix: str, _meta: Any) -> None:
    for alias in module.aliases:
        state.pop(prefix + alias, None)


def _fill_aliases(module: CausalLM, state: dict[str, Tensor], prefix: str, *_: Any) -> None:
    for alias, source in module.aliases.items():
        if prefix + source in state:
            state.setdefault(prefix + alias, state[prefix + source])


class CausalLM(nn.Module):
    """A Hugging Face causal LM read from a local directory; ``forward(tokens)`` gives the logits.

    With ``weights=False`` (what ``--model`` needs) only the architecture is built from
    ``config.json``; the weights come from the checkpoints being compared.
    """

    def __init__(self, path: str, weights: bool = False) -> None:
        super().__init__()
        tf = transformers()
        folder = _model_dir(path)
        if weights:
            self.lm = tf.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=False, dtype=torch.float32
            )
        else:
            config = tf.AutoConfig.from_pretrained(
                folder, local_files_only=True, trust_remote_code=False
            )
            self.lm = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        self.lm.eval()
        first: dict[int, str] = {}
        self.aliases: dict[str, str] = {}
        for name, param in self.named_parameters(remove_duplicate=False):
            if id(param) in first:
                self.aliases[name] = first[id(param)]
            else:
                first[id(param)] = name
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_fill_aliases)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits, (batch, sequence, vocabulary)."""
        return self.lm(input_ids=tokens, use_cache=False).logits

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Embeddings, each block, final norm, output layer (``lwlc.formats.hf_stages``), or the
        whole model for a decoder of another layout; ``stages_how`` says which."""
        pairs, self.stages_how = decoder_stages(self, "lm", self.aliases)
        return pairs


def _weights_digest(folder: Path) -> str:
    """sha256 over the sha256 of every weight file, so results name the exact weights compared."""
    files = sorted(f for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise LwlcError(f"{folder} holds no weight files (*.safetensors or *.bin)")
    for f in files:
        check_weights_file(f)
    return hashlib.sha256("".join(f"{f.name}:{sha256(f)}" for f in files).encode()).hexdigest()


def read_hf_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A local Hugging Face model directory as an lwlc checkpoint with one member, ``model``."""
    folder = _model_dir(path)
    digest = _weights_digest(folder)
    state = CausalLM(str(folder), weights=True).state_dict()
    return Checkpoint(
        path=str(folder),
        sha256=digest,
        members={"model": state},
        model_config={"class_path": f"{__name__}.CausalLM", "init_args": {"path": str(folder)}},
    )


class TextDataModule(L.LightningDataModule):
    """A text file as next-token windows: ``seq_len`` input tokens, targets shifted by one.

    Tokens come from a Hugging Face tokenizer directory (``tokenizer``; e.g. the model's own
    folder) or are the file's UTF-8 bytes (``tokenizer="bytes"``, vocabulary 256). The token
    stream is cut into consecutive windows; the first ones are ``train``, then ``val``, then
    ``test`` (fractions ``val_fraction`` and ``test_fraction``).
    """

    def __init__(
        self,
        path: str,
        tokenizer: str = "bytes",
        seq_len: int = 128,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        if seq_len < 1 or batch_size < 1:
            raise LwlcError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
        if not (0 <= val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise LwlcError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                ">= 0 and > 0 and sum to less than 1"
            )
        self.save_hyperparameters()
        self.path, self.tokenizer, self.seq_len, self.batch_size = (
            path,
            tokenizer,
            seq_len,
            batch_size,
        )
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self._windows: dict[str, Tensor] | None = None

    def tokens(self) -> Tensor:
        """The whole file as token ids."""
        file = Path(self.path)
        if not file.is_file():
            raise LwlcError(f"text file {file} does not exist: check --data.init_args.path")
        text = file.read_text(encoding="utf-8")
        if self.tokenizer == "bytes":
            return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
        folder = Path(self.tokenizer)
        if folder.is_dir():
            _refuse_remote_code(folder)
        tok = transformers().AutoTokenizer.from_pretrained(
            self.tokenizer, local_files_only=True, trust_remote_code=False
        )
        return torch.tensor(tok(text)["input_ids"], dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        """Tokenise once, cut the windows and log where they came from (one line, rank 0)."""
        if self._windows is not None:
            return
        tokens = self.tokens()
        n = (len(tokens) - 1) // self.seq_len
        if n < 3:
            raise LwlcError(
                f"{self.path} has {len(tokens)} tokens, too few for 3 windows of "
                f"seq_len={self.seq_len}: use a longer text or a smaller seq_len"
            )
        starts = torch.arange(n) * self.seq_len
        windows = tokens[starts[:, None] + torch.arange(self.seq_len + 1)]
        n_test = max(1, round(self.fractions["test"] * n))
        n_val = round(self.fractions["val"] * n)
        n_train = n - n_val - n_test
        self._windows = {
            "train": windows[:n_train],
            "val": windows[n_train : n_train + n_val],
            "test": windows[n_train + n_val :],
        }
        tokens_of = "UTF-8 bytes" if self.tokenizer == "bytes" else f"tokenizer {self.tokenizer}"
        rank_zero_info(
            f"lwlc: data: text from {self.path} ({len(tokens)} tokens, {tokens_of}) ({n_train} "
            f"train, {n_val} val, {n_test} test windows of {self.seq_len})"
        )

    def tensors(self, split: str, max_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``max_samples`` windows of a split as (inputs, next-token targets)."""
        if split not in SPLITS:
            raise LwlcError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
        self.setup()
        assert self._windows is not None
        windows = self._windows[split][:max_samples]
        return windows[:, :-1], windows[:, 1:]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            TensorDataset(*self.tensors(split)), batch_size=self.batch_size, shuffle=shuffle
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

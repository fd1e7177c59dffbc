"""Hugging Face causal LMs from local directories through ``lwlc analyze`` (tiny, no download)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from engine_reference import naive_state
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.formats.hf import CausalLM, TextDataModule

SEQ_LEN = 16
TEXT = " ".join(
    f"the {w} {v} over the {o} number {i}."
    for i, (w, v, o) in enumerate(
        zip(
            ["cat", "dog", "fox", "owl"] * 20,
            ["jumps", "runs", "sleeps", "flies"] * 20,
            ["hill", "log", "river", "moon", "wall"] * 16,
            strict=True,
        )
    )
)
# One module of the second block per architecture, compared on its own (a custom plan).
MLP_IN = {
    "gpt2": "lm.transformer.h.1.mlp.c_fc",
    "gpt_neox": "lm.gpt_neox.layers.1.mlp.dense_h_to_4h",
}
CONFIGS = {
    # GPT-2 ties its output layer to the input embedding; GPT-NeoX (Pythia) does not.
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=256, n_embd=32, n_layer=2, n_head=4, n_positions=64
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=256,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    ),  # fmt: skip
}


def save_random_model(folder: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(CONFIGS[arch]()).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models: one thread avoids contention on a shared machine (conftest restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def windows_by_hand(tokens: list[int], split: str) -> torch.Tensor:
    """The split's windows of SEQ_LEN + 1 tokens, with the module's default 5% val and 10% test."""
    n = (len(tokens) - 1) // SEQ_LEN
    rows = [tokens[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1] for i in range(n)]
    n_test, n_val = max(1, round(0.1 * n)), round(0.05 * n)
    n_train = n - n_val - n_test
    chosen = {
        "train": rows[:n_train],
        "val": rows[n_train : n_train + n_val],
        "test": rows[n_train + n_val :],
    }
    return torch.tensor(chosen[split])


def test_text_windows_are_consecutive_next_token_pairs(text_file: Path) -> None:
    data = TextDataModule(str(text_file), seq_len=SEQ_LEN)
    tokens = list(TEXT.encode("utf-8"))
    for split in ("train", "val", "test"):
        inputs, targets = data.tensors(split)
        expected = windows_by_hand(tokens, split)
        assert torch.equal(inputs, expected[:, :-1]) and torch.equal(targets, expected[:, 1:])
    assert len(data.tensors("test", max_samples=2)[0]) == 2


def test_a_local_tokenizer_directory_tokenises_the_text(text_file: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(TEXT.replace(".", " .").split()))
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )
    data = TextDataModule(str(text_file), tokenizer=str(tmp_path / "tok"), seq_len=4)
    by_hand = [vocab[w] for w in TEXT.replace(".", " .").split()]
    inputs, targets = data.tensors("train")
    assert inputs[0].tolist() == by_hand[:4] and targets[0].tolist() == by_hand[1:5]


def test_tied_weights_are_one_tensor_in_the_state_dict_and_load_back_tied(tmp_path: Path) -> None:
    folder = save_random_model(tmp_path / "gpt2", "gpt2", seed=0)
    model = CausalLM(str(folder))
    state = model.state_dict()
    assert "lm.transformer.wte.weight" in state and "lm.lm_head.weight" not in state
    state["lm.transformer.wte.weight"] = torch.randn_like(state["lm.transformer.wte.weight"])
    model.load_state_dict(state)
    assert torch.equal(model.lm.lm_head.weight, state["lm.transformer.wte.weight"])


def hf_loss(folder: Path, state: dict, tokens: torch.Tensor) -> float:
    """Mean next-token cross-entropy of transformers' own model loaded with ``state``."""
    net = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        logits = net(input_ids=tokens[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).item()


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_analyze_compares_two_local_models_like_transformers_does(
    arch: str, text_file: Path, tmp_path: Path
) -> None:
    a_dir, b_dir = (
        save_random_model(tmp_path / "a", arch, 0),
        save_random_model(tmp_path / "b", arch, 1),
    )
    out = tmp_path / "out"
    main(
        [
            "analyze",
            "--ckpt-a",
            str(a_dir),
            "--ckpt-b",
            str(b_dir),
            "--data",
            "lwlc.formats.hf.TextDataModule",
        ]
        + ["--data.init_args.path", str(text_file), "--data.init_args.seq_len", str(SEQ_LEN)]
        + ["--plans", "full", "--custom", f"mlp={MLP_IN[arch]}", "--rest-from", "a"]
        + ["--alphas", "0,0.5,1", "--out", str(out), "--no-plots"]
    )
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert {r["plan"] for r in rows} == {"full", "custom"} and len(rows) == 6
    # embeddings, 2 blocks, final norm, head: the engine shared every prefix of blocks
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages == {"count": 5, "how": "hugging face decoder blocks (2 blocks)"}
    a = transformers.AutoModelForCausalLM.from_pretrained(a_dir, dtype=torch.float32).state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(b_dir, dtype=torch.float32).state_dict()
    tokens = windows_by_hand(list(TEXT.encode("utf-8")), "test")
    module = MLP_IN[arch].removeprefix("lm.")
    for r in rows:
        keys = set(a) if r["plan"] == "full" else {k for k in a if k.rpartition(".")[0] == module}
        expected = hf_loss(a_dir, naive_state(a, b, keys, float(r["alpha"]), "a"), tokens)
        assert float(r["loss"]) == pytest.approx(expected, abs=1e-5), r


def test_without_transformers_the_model_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = save_random_model(tmp_path / "gpt2", "gpt2", seed=0)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(LwlcError, match=r"optional 'lm' extra: pip install 'lwlc\[lm\]'"):
        CausalLM(str(folder))

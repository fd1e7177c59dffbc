"""Hugging Face decoders get block-level stages (embeddings, each block, final norm, head) and the
engine's sweep over them equals the naive loop: load each interpolated state dict, run the whole
model, score every token. Tiny randomly initialised models built from configs (no download)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from engine_reference import naive_state
from lwlc.core.engine import Evaluator
from lwlc.core.interpolation import make_paths
from lwlc.core.layers import default_groups
from lwlc.core.stages import find_stages
from lwlc.core.sweep import sweep
from lwlc.formats.hf import CausalLM

VOCAB, SEQ, N = 64, 12, 6
CONFIGS = {
    # GPT-2 ties its output layer to the input embedding; GPT-NeoX (Pythia) and Llama do not.
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32,
        bos_token_id=0, eos_token_id=0,
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
    ),
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=32, max_position_embeddings=32,
    ),
}  # fmt: skip
BLOCKS = {"gpt2": 2, "gpt_neox": 3, "llama": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models: one thread avoids contention on a shared machine (conftest restores it)."""
    torch.set_num_threads(1)


def _pair(arch: str, folder: Path) -> tuple[CausalLM, dict, dict]:
    """CausalLM built from a saved config, and two independently initialised state dicts."""
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(CONFIGS[arch]()).save_pretrained(folder)
    model = CausalLM(str(folder))
    a = model.state_dict()
    torch.manual_seed(1)
    b = CausalLM(str(folder)).state_dict()
    return model, a, b


def _naive(model: CausalLM, state: dict, tokens: torch.Tensor) -> tuple[float, float]:
    """Per-token loss and accuracy of one interpolated model: load it, run it whole."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    with torch.no_grad():
        logits = net.eval()(tokens[:, :-1]).flatten(0, 1)
    target = tokens[:, 1:].flatten()
    return F.cross_entropy(logits, target).item(), (
        logits.argmax(1) == target
    ).float().mean().item()


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_decoder_blocks_are_stages_and_the_sweep_equals_the_naive_loop(
    arch: str, tmp_path: Path
) -> None:
    model, a, b = _pair(arch, tmp_path / arch)
    found = find_stages(model)
    assert found.how == f"hugging face decoder blocks ({BLOCKS[arch]} blocks)"
    tokens = torch.randint(VOCAB, (N, SEQ + 1), generator=torch.Generator().manual_seed(3))
    x, y = tokens[:, :-1], tokens[:, 1:]
    paths = make_paths(default_groups(model, x[:2]), ["full", "single"], rest_from=["a", "b"])
    alphas = [0.0, 0.3, 0.5, 1.0]
    ev = Evaluator(model, a, b)
    assert len(ev.stages) == 1 + BLOCKS[arch] + 1 + 1  # embeddings, blocks, final norm, head
    res = sweep(ev, paths, alphas, {"test": (x, y)}, batch_size=4)
    worst = 0.0
    for p in paths:
        rows = [
            r
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)
        ]
        assert [r["alpha"] for r in rows] == alphas
        for r in rows:
            loss, acc = _naive(
                model, naive_state(a, b, set(p.keys), r["alpha"], p.rest_from), tokens
            )
            worst = max(worst, abs(r["loss"] - loss))
            assert r["loss"] == pytest.approx(loss, abs=1e-5), (p.group, p.rest_from, r["alpha"])
            assert r["accuracy"] == pytest.approx(acc, abs=1e-6), (p.group, p.rest_from, r["alpha"])
    print(f"{arch}: {len(ev.stages)} stages, {len(paths)} paths, largest error {worst:.1e}")
    # prefixes are shared: the embeddings ran far fewer samples than models x samples
    models = len(paths) * len(alphas)
    assert ev.stage_runs[0] < models * N / 4


def test_tied_output_layer_is_bound_with_the_embedding(tmp_path: Path) -> None:
    """GPT-2's head uses the embedding's tensor: interpolating the embedding alone moves both."""
    model, a, b = _pair("gpt2", tmp_path / "gpt2")
    ev = Evaluator(model, a, b)
    head = ev.stages[-1]
    assert head.keys == ("lm.transformer.wte.weight",) == ev.stages[0].keys[:1]


def test_a_decoder_whose_forward_the_blocks_do_not_reproduce_is_one_stage(tmp_path: Path) -> None:
    """An extra step after the head (as logit soft-capping) is caught by the probe."""
    model, _, _ = _pair("gpt2", tmp_path / "gpt2")
    model.lm.register_forward_hook(lambda _m, _i, out: out.__class__(logits=torch.tanh(out.logits)))
    found = find_stages(model)
    assert len(found.pairs) == 1
    assert found.how.startswith("one stage: its blocks do not reproduce its forward")


def test_a_causal_lm_of_another_layout_is_one_stage_and_says_so(tmp_path: Path) -> None:
    model, _, _ = _pair("gpt2", tmp_path / "gpt2")
    model.lm.transformer.h = torch.nn.Sequential(*model.lm.transformer.h)
    found = find_stages(model)
    assert (len(found.pairs), found.how) == (
        1,
        "one stage: GPT2LMHeadModel is not a decoder lwlc knows",
    )

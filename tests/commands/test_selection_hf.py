"""``lwlc merge --out DIR`` for Hugging Face models: a save_pretrained folder and a mergekit.yml
that mergekit's own config model accepts and that gives every tensor the merge's weights."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers  # noqa: E402
import yaml
from mergekit import config as mergekit_config  # noqa: E402

from lwlc.commands.cli import main


def save_gpt2(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def test_hf_merge_writes_the_model_and_an_equivalent_mergekit_config(tmp_path: Path) -> None:
    a, b = save_gpt2(tmp_path / "a", 0), save_gpt2(tmp_path / "b", 1)
    out = tmp_path / "merged"
    main(["merge", "--ckpt-a", str(a), "--ckpt-b", str(b), "--groups", "lm.transformer.h.1.*",
          "--alpha", "0.25", "--out", str(out)])  # fmt: skip
    load = transformers.AutoModelForCausalLM.from_pretrained
    sa, sb, merged = (load(p).state_dict() for p in (a, b, out))
    chosen = [k for k in sa if k.startswith("transformer.h.1.") and sa[k].is_floating_point()]
    assert chosen
    for k, v in sa.items():
        want = 0.75 * v + 0.25 * sb[k] if k in chosen else v
        assert torch.allclose(merged[k], want, atol=1e-7, rtol=0), k
    config = yaml.safe_load((out / "mergekit.yml").read_text())
    parsed = mergekit_config.MergeConfiguration.model_validate(config)
    assert parsed.merge_method == "linear"
    for k in sa:
        if not sa[k].is_floating_point():
            continue
        got = [
            mergekit_config.evaluate_setting(k, m.parameters["weight"], validate=float)
            for m in parsed.models
        ]
        assert got == ([0.75, 0.25] if k in chosen else [1.0, 0.0]), k

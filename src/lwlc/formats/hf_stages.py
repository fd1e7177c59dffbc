"""Block-level stages of a Hugging Face decoder (GPT-2, GPT-NeoX/Pythia, Llama-style).

torch.fx cannot trace these models in general, so their stages are built from the module
structure: the embeddings (everything the backbone runs before its first block), each block, the
final norm and the output layer. A stage maps one hidden-states tensor to the next; the side
inputs every block takes (causal mask, position ids, rotary embeddings, no cache) are what the
model itself passes to each block, captured once per sequence length from a one-sample run and
broadcast over any batch (the engine stacks batches). Each stage holds the model's own
submodules under their own names, so its state-dict keys are the model's; a tied output layer
holds the embedding it shares its weight with, so it is bound to the same model's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Pair = tuple[str, nn.Module]
SideInputs = tuple[tuple[Any, ...], dict[str, Any]]
# backbone attribute: (its blocks, its final norm)
LAYOUTS = {
    "transformer": ("h", "ln_f"),  # GPT-2
    "gpt_neox": ("layers", "final_layer_norm"),  # GPT-NeoX, Pythia
    "model": ("layers", "norm"),  # Llama, Mistral, Qwen2 and the like
}
HOW = "hugging face decoder blocks"


class Piece(nn.Module):
    """A stage running ``run`` on one tensor, holding ``root``'s submodules at ``paths`` under
    the same paths (so its state-dict keys are ``root``'s)."""

    def __init__(self, root: nn.Module, paths: Sequence[str], run: Callable[[Tensor], Tensor]):
        super().__init__()
        for path in paths:
            parent: nn.Module = self
            *heads, leaf = path.split(".")
            for head in heads:
                if head not in parent._modules:
                    parent.add_module(head, nn.Module())
                parent = parent.get_submodule(head)
            parent.add_module(leaf, root.get_submodule(path))
        self.run = run

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)


class _Stop(Exception):
    """Raised by a hook on the first block to end the backbone's forward with its inputs."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, SideInputs]:
    """A block call's hidden states and the rest of its arguments."""
    if args:
        return args[0], (args[1:], kwargs)
    rest = dict(kwargs)
    return rest.pop("hidden_states"), ((), rest)


class Decoder:
    """The backbone of ``lm`` (a ``*ForCausalLM``) run stage by stage."""

    def __init__(self, lm: nn.Module, backbone: str, blocks: str) -> None:
        self.backbone: nn.Module = getattr(lm, backbone)
        self.blocks: nn.ModuleList = getattr(self.backbone, blocks)
        self.side: dict[tuple[int, torch.dtype, torch.device], list[SideInputs]] = {}

    def embed(self, tokens: Tensor) -> Tensor:
        """The hidden states the backbone gives its first block."""

        def stop(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise _Stop(_split(args, kwargs)[0])

        handle = self.blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.backbone(input_ids=tokens, use_cache=False)
        except _Stop as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError("the backbone never called its first block")

    def side_inputs(self, x: Tensor) -> list[SideInputs]:
        """Every block's other arguments for hidden states shaped like ``x``, as the backbone
        passes them, from one run on ``x``'s first sample (cached per length, dtype, device)."""
        key = (x.shape[1], x.dtype, x.device)
        if key not in self.side:
            calls: list[SideInputs] = []

            def record(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                calls.append(_split(args, kwargs)[1])

            handles = [b.register_forward_pre_hook(record, with_kwargs=True) for b in self.blocks]
            try:
                self.backbone(inputs_embeds=x[:1], use_cache=False)
            finally:
                for h in handles:
                    h.remove()
            self.side[key] = calls
        return self.side[key]

    def block(self, i: int) -> Callable[[Tensor], Tensor]:
        """Block ``i`` as a function of the hidden states alone."""

        def run(x: Tensor) -> Tensor:
            args, kwargs = self.side_inputs(x)[i]
            out = self.blocks[i](x, *args, **kwargs)
            return out[0] if isinstance(out, tuple) else out  # older transformers: a tuple

        return run


def decoder_stages(
    model: nn.Module, lm_path: str, aliases: dict[str, str]
) -> tuple[list[Pair], str]:
    """Stages of the ``*ForCausalLM`` at ``lm_path`` in ``model`` (whose forward is the LM's
    logits), or the whole model as one stage with the reason; ``aliases``: tied state-dict names
    of ``model`` and the names they share their tensor with."""
    lm = model.get_submodule(lm_path)
    layout = next(
        (
            (backbone, blocks, norm)
            for backbone, (blocks, norm) in LAYOUTS.items()
            if isinstance(getattr(getattr(lm, backbone, None), blocks, None), nn.ModuleList)
            and isinstance(getattr(getattr(lm, backbone), norm, None), nn.Module)
            and isinstance(getattr(lm, "lm_head", None), nn.Linear)
        ),
        None,
    )
    if layout is None or not len(getattr(getattr(lm, layout[0]), layout[1])):
        return [("", model)], f"one stage: {type(lm).__name__} is not a decoder lwlc knows"
    backbone, blocks, norm = layout
    decoder = Decoder(lm, backbone, blocks)
    base = f"{lm_path}.{backbone}"
    embeddings = [
        f"{base}.{name}" for name in decoder.backbone._modules if name not in (blocks, norm)
    ]
    head = f"{lm_path}.lm_head"
    tied = [src.rpartition(".")[0] for alias, src in aliases.items() if alias.startswith(head)]
    pairs: list[Pair] = [
        ("", Piece(model, embeddings, decoder.embed)),
        *(
            ("", Piece(model, [f"{base}.{blocks}.{i}"], decoder.block(i)))
            for i in range(len(decoder.blocks))
        ),
        (f"{base}.{norm}", model.get_submodule(f"{base}.{norm}")),
        ("", Piece(model, [head, *tied], model.get_submodule(head).forward))
        if tied
        else (head, model.get_submodule(head)),
    ]
    error = _probe_error(model, pairs, lm.get_input_embeddings().num_embeddings)
    if error > 1e-5:
        return [("", model)], f"one stage: its blocks do not reproduce its forward ({error:.1e})"
    return pairs, f"{HOW} ({len(decoder.blocks)} blocks)"


@torch.no_grad()
def _probe_error(model: nn.Module, pairs: list[Pair], vocab: int) -> float:
    """Largest relative difference between the model's logits and its stages run in turn, on two
    random sequences of 8 tokens in eval mode (a block the backbone calls differently, or a head
    with extra steps such as logit soft-capping, shows here)."""
    tokens = torch.randint(vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tokens = tokens.to(device)
    training = model.training
    model.eval()
    try:
        expected = model(tokens)
        x = tokens
        for _, stage in pairs:
            x = stage(x)
    finally:
        model.train(training)
    if x.shape != expected.shape:
        return float("inf")
    return ((x - expected).abs().max() / expected.abs().max().clamp_min(1.0)).item()

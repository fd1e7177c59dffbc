"""A small GPT-like language model (after nanoGPT): pre-norm transformer blocks, causal attention.

Differences from nanoGPT, all for layer-wise connectivity: the input embedding and the output
head are separate matrices (tied weights would be one tensor under two state-dict keys, so the
two "layers" could not be averaged independently), and the forward pass is the sequence of
stages ``embed``, ``blocks.0`` .. ``blocks.{depth-1}``, ``ln_f``, ``head``. Logits are per token,
shape ``[batch, time, vocab]``.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lwlc.core.errors import LwlcError
from lwlc.models.base import Stage, StagedNet, children_stages

INIT_STD = 0.02


class GPTLinear(nn.Linear):
    """A Linear layer initialised as in GPT-2: weights N(0, std), zero bias.

    The initialisation lives in ``reset_parameters`` so that re-drawing a model's weights
    (``lwlc.training.reinitialize``) gives GPT-2's initialisation again.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, std: float = INIT_STD
    ) -> None:
        self.std = std  # read by reset_parameters, which nn.Linear.__init__ calls
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class GPTEmbedding(nn.Embedding):
    """An embedding table initialised as in GPT-2: N(0, 0.02)."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=INIT_STD)


class Embedding(nn.Module):
    """Token plus learned position embedding of a batch of token ids ``[batch, time]``."""

    def __init__(self, vocab_size: int, block_size: int, width: int, dropout: float) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = GPTEmbedding(vocab_size, width)
        self.pos = GPTEmbedding(block_size, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        if t > self.block_size:
            raise LwlcError(f"sequence length {t} exceeds the model's block_size={self.block_size}")
        positions = torch.arange(t, device=ids.device)
        return self.drop(self.tok(ids) + self.pos(positions))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier positions."""

    def __init__(self, width: int, heads: int, dropout: float, proj_std: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.c_attn = GPTLinear(width, 3 * width)
        self.c_proj = GPTLinear(width, width, std=proj_std)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_drop(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class MLPBlock(nn.Module):
    """The position-wise feed-forward part of a block: width -> 4 width -> width with GELU."""

    def __init__(self, width: int, dropout: float, proj_std: float) -> None:
        super().__init__()
        self.c_fc = GPTLinear(width, 4 * width)
        self.gelu = nn.GELU()
        self.c_proj = GPTLinear(4 * width, width, std=proj_std)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, dropout: float, proj_std: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout, proj_std)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLPBlock(width, dropout, proj_std)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(StagedNet):
    """A decoder-only transformer over token ids; ``depth`` blocks (the paper's model has 12)."""

    def __init__(
        self,
        vocab_size: int = 128,
        block_size: int = 128,
        depth: int = 4,
        heads: int = 4,
        width: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise LwlcError(f"width={width} must be divisible by heads={heads}")
        if min(vocab_size, block_size, depth, heads) < 1:
            raise LwlcError(
                f"vocab_size, block_size, depth and heads must be >= 1, got {vocab_size}, "
                f"{block_size}, {depth}, {heads}"
            )
        proj_std = INIT_STD / math.sqrt(2 * depth)  # GPT-2's scaled init of residual projections
        self.embed = Embedding(vocab_size, block_size, width, dropout)
        self.blocks = nn.Sequential(*(Block(width, heads, dropout, proj_std) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = GPTLinear(width, vocab_size, bias=False)

    def stages(self) -> list[Stage]:
        """``embed``, ``blocks.0`` .. ``blocks.{depth-1}``, ``ln_f``, ``head``."""
        return [
            ("embed", self.embed),
            *children_stages(self.blocks, "blocks"),
            ("ln_f", self.ln_f),
            ("head", self.head),
        ]

"""One network out of an lwlc checkpoint, as a plain ``nn.Module``.

A pair checkpoint holds both members under ``net_a.``/``net_b.`` prefixes of one Lightning
state dict; :func:`load_network` rebuilds the member's model from the config the checkpoint
saved (vouched for first: only lwlc/torch.nn/torchvision.models classes unless ``trust``) and
loads its weights, so nobody strips prefixes by hand.
"""

from __future__ import annotations

import os

from torch import nn

from lwlc.core.errors import LwlcError
from lwlc.formats.checkpoints import build_model, read_checkpoint
from lwlc.formats.inputs import check_model


def load_network(path: str | os.PathLike[str], member: str = "a", trust: bool = False) -> nn.Module:
    """The network ``member`` (``"a"`` or ``"b"`` of a pair; a single-network checkpoint's one
    network for ``"a"`` or ``"model"``) of the lwlc checkpoint at ``path``, with its weights, in
    eval mode. ``trust`` allows model classes outside lwlc/torch.nn/torchvision.models."""
    checkpoint = read_checkpoint(path)
    label = "model" if not checkpoint.paired and member in ("a", "model") else member
    if label not in checkpoint.members:
        held = "a pair (members 'a' and 'b')" if checkpoint.paired else "one network ('model')"
        raise LwlcError(f"{path} holds {held}: member {member!r} is not in it")
    if checkpoint.model_config is None:
        raise LwlcError(
            f"{path} records no model config (a plain state dict?): build the model yourself "
            "and load_state_dict the file"
        )
    model = build_model(checkpoint.model_config, trust=trust)
    state = checkpoint.members[label]
    check_model(model, state)
    model.load_state_dict(state)
    return model.eval()

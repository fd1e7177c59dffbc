"""Keep ``transformers`` out of the ``lwlc`` commands that do not use it.

lwlc imports ``transformers`` only where a Hugging Face model or tokenizer is read
(``lwlc.formats.hf``). But torchmetrics, which Lightning imports in every command, imports it
while its own package initialises whenever it is installed (for BERTScore, InfoLM and CLIPScore;
Lightning-AI/torchmetrics#2242): seconds and thousands of modules in every ``lwlc fit`` or
``analyze`` of a classifier. :func:`defer_transformers` makes torchmetrics find transformers
absent during that initialisation, and only then. The modules that asked are forgotten
afterwards, so importing one later runs it again with transformers: ``from
torchmetrics.text.bert import BERTScore`` works in an ``lwlc`` process (the package-level
``torchmetrics.text.BERTScore`` does not exist there).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

DEFERRED = "transformers"


@contextmanager
def _deferred_requirement() -> Iterator[None]:
    """lightning_utilities' ``RequirementCache`` (torchmetrics' availability checks) reports
    ``DEFERRED`` as absent inside the block; nothing is cached, so later checks are true ones.
    The plain modules (not packages) that asked are then removed from ``sys.modules``."""
    from lightning_utilities.core.imports import RequirementCache

    checked = RequirementCache.__bool__
    asked: set[str] = set()

    def available(self: RequirementCache) -> bool:
        name = re.match(r"[\w.-]*", self.requirement or str(self.module)).group()
        if name.split(".")[0] != DEFERRED:
            return checked(self)
        asked.add(sys._getframe(1).f_globals.get("__name__", ""))
        return False

    RequirementCache.__bool__ = available  # type: ignore[method-assign]
    try:
        yield
    finally:
        RequirementCache.__bool__ = checked  # type: ignore[method-assign]
        for name in asked:
            if not hasattr(sys.modules.get(name), "__path__"):
                sys.modules.pop(name, None)


class _TorchmetricsFinder(importlib.abc.MetaPathFinder):
    """Finds torchmetrics as usual (once) and runs its package initialisation in the block."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchmetrics":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        initialise = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            del loader.exec_module  # the loader's own method again
            with _deferred_requirement():
                initialise(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def defer_transformers() -> None:
    """Keep torchmetrics from importing transformers when it is first imported (a no-op when
    it already is, or once this was called)."""
    if "torchmetrics" in sys.modules or any(
        isinstance(f, _TorchmetricsFinder) for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _TorchmetricsFinder())

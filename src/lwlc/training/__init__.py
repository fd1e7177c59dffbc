"""Training: the LightningModules that train one network or a pair (``modules``), the
learning-rate schedules that span a run (``schedules``) and federated averaging
(``federated``). ``lwlc.training.PairedModule`` and ``ClassifierModule`` are the class paths
configs and checkpoints name."""

from lwlc.training.modules import ClassifierModule, PairedModule, reinitialize, sgd

__all__ = ["ClassifierModule", "PairedModule", "reinitialize", "sgd"]

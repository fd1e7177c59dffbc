"""lwlc's model zoo: plain nn.Modules whose forward is a sequence of named stages."""

from lwlc.models.base import StagedNet
from lwlc.models.cnn import SmallCNN
from lwlc.models.gpt import GPT
from lwlc.models.mlp import MLP
from lwlc.models.mobilenet import MobileNet
from lwlc.models.resnet import ResNet18
from lwlc.models.sequential import Sequential
from lwlc.models.vgg import VGG

__all__ = ["GPT", "MLP", "MobileNet", "ResNet18", "Sequential", "SmallCNN", "StagedNet", "VGG"]

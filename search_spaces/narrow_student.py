"""A narrower student than the notebook's, for search_spaces/cifar10_students.yaml: three 3x3 convolutions of 16, 32
and 64 channels and a global average pool, 24 k parameters against StudentNet's 545 k (whose 256-unit fully
connected layer holds most of its weights)."""
import torch.nn as nn


def NarrowNet(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

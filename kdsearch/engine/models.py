"""The notebook's networks, layer for layer, with a flat registry by name.

Layer order and attribute names match the notebook exactly, so a state_dict saved there loads here as is
(TeacherNet: 3,251,018 parameters; StudentNet: 545,098, at 32x32). At another image size the first linear layer
follows the image (its input is the last feature map's size); nothing else changes.
"""
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn_block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.MaxPool2d(2),
    )


class TeacherNet(nn.Module):
    """Three conv-BN blocks (64, 128, 256 channels) and a BN'd 512-unit classifier."""

    min_size = 8  # three 2x2 poolings

    def __init__(self, num_classes=10, image_size=(32, 32)):
        super().__init__()
        h, w = image_size[0] // 8, image_size[1] // 8
        self.block1 = _conv_bn_block(3, 64)
        self.block2 = _conv_bn_block(64, 128)
        self.block3 = _conv_bn_block(128, 256)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(256 * h * w, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.block3(self.block2(self.block1(x))))


class StudentNet(nn.Module):
    """Two convs (32, 64 channels) with max-pooling and two linear layers; no normalisation."""

    min_size = 4  # two 2x2 poolings

    def __init__(self, num_classes=10, image_size=(32, 32)):
        super().__init__()
        h, w = image_size[0] // 4, image_size[1] // 4
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * h * w, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        # The notebook computes pool(relu(conv(x))). ReLU is monotonic, so relu(pool(.)) is the same function
        # (outputs and gradients agree within float rounding: tested), with ReLU and its backward on 4x fewer
        # elements. `kdsearch bench` measures the speed of both orders (kd_img_s, kd_notebook_relu_img_s).
        x = F.relu(self.pool(self.conv1(x)), inplace=True)
        x = F.relu(self.pool(self.conv2(x)), inplace=True)
        # flatten (not view): the input may be channels_last, and flatten copies only when it must
        x = F.relu(self.fc1(x.flatten(1)), inplace=True)
        return self.fc2(x)


MODELS = {"teacher": TeacherNet, "student": StudentNet}


def build_model(name, num_classes=10, image_size=(32, 32)):
    return MODELS[name](num_classes=num_classes, image_size=tuple(image_size))


def count_params(model):
    return sum(p.numel() for p in model.parameters())

"""Torch models: the default heatmap backbone (MobileNetV2 + light FPN head)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255
IMAGENET_STD = (58.395, 57.12, 57.375)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block, with its parameter names."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expand, channels, repeats, stride) of torchvision's MobileNetV2: up to stride 16 (features.0-13),
# then the stride-32 stages (features.14-17) for context
_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
_CFG32 = [(6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2Features(nn.Module):
    """``features.0`` to ``features.13`` of torchvision's MobileNetV2 (``features.17`` with
    ``context``); returns strides 4, 8, 16 (and 32)."""

    def __init__(self, context: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _CFG + (_CFG32 if context else []):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.taps = {3: "s4", 6: "s8", 13: "s16", 17: "s32"}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out[self.taps[i]] = x
        return out

    def load_imagenet(self, path: str | Path) -> int:
        """Load torchvision's ImageNet checkpoint (``mobilenet_v2-b0353104.pth``); returns tensors loaded."""
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        mine = self.state_dict()
        picked = {k: v for k, v in state.items() if k in mine and mine[k].shape == v.shape}
        missing = [k for k in mine if k not in picked and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"{path}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        self.load_state_dict(picked, strict=False)
        return len(picked)


class HeatmapNet(nn.Module):
    """MobileNetV2 (stride 16, or 32 with ``context``) + FPN-lite head -> K heatmaps at stride 4.

    Input: (N, 3, S, S) RGB already normalised with ImageNet mean/std. Output: (N, K, S/4, S/4),
    trained towards Gaussians of peak 1; ``forward`` clamps at 0 so heatmaps are non-negative.
    """

    def __init__(self, k: int = 68, width: int = 96, context: bool = False) -> None:
        super().__init__()
        self.context = context
        self.body = MobileNetV2Features(context)
        if context:  # stride-32 features, upsampled into the stride-16 lateral
            self.lat32 = _conv_bn(320, width, 1, relu=False)
        self.lat16 = _conv_bn(96, width, 1, relu=not context)
        self.lat8 = _conv_bn(32, width, 1, relu=False)
        self.lat4 = _conv_bn(24, width, 1, relu=False)
        self.smooth8 = nn.Sequential(_conv_bn(width, width, 3, groups=width), _conv_bn(width, width, 1))
        self.smooth4 = nn.Sequential(_conv_bn(width, width, 3, groups=width), _conv_bn(width, width, 1),
                                     _conv_bn(width, width, 3, groups=width))
        self.out = nn.Conv2d(width, k, 1)
        self.k = k
        self.stride = 4

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        y = self.lat16(f["s16"])
        if self.context:
            y = F.relu(y + F.interpolate(self.lat32(f["s32"]), size=y.shape[-2:], mode="bilinear", align_corners=False))
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.smooth8(F.relu(y + self.lat8(f["s8"])))
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.smooth4(F.relu(y + self.lat4(f["s4"])))
        return self.out(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.raw(x))


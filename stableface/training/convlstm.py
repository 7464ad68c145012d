"""The per-landmark ConvLSTM of Eq. 1 in torch, and its ONNX export with a parity check.

Layout (same as ``stableface.stabilizer.convlstm_reference``): for each landmark k,
``gates = conv3x3([o^k, h^k])`` -> i, f, g, o (``hidden`` channels each);
``c' = sig(f) c + sig(i) tanh(g)``, ``h' = sig(o) tanh(c')``; ``s^k = conv1x1([o^k, h'^k])``.
All convolutions are grouped by landmark (groups = K), so the cost grows linearly in K.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ConvLSTM(nn.Module):
    """Per-landmark ConvLSTM step.

    ``init="identity"`` starts as ``s = o`` (the raw backbone). ``init="ema"`` starts as an
    exponential moving average of the heatmaps (rate ``alpha``) in the first hidden channel:
    training then only has to learn when to follow faster (motion) instead of discovering
    temporal smoothing from scratch.
    """

    def __init__(self, k: int, hidden: int = 2, kernel: int = 3, init: str = "identity", alpha: float = 0.4) -> None:
        super().__init__()
        self.k, self.hidden = k, hidden
        self.gates = nn.Conv2d(k * (1 + hidden), k * 4 * hidden, kernel, padding=kernel // 2, groups=k)
        self.out = nn.Conv2d(k * (1 + hidden), k, 1, groups=k)
        with torch.no_grad():
            b = self.gates.bias.view(k, 4, hidden)
            b.zero_()
            b[:, 1] = 1.0  # forget gate open
            self.out.weight.zero_()
            self.out.bias.zero_()
            if init == "identity":
                self.out.weight.view(k, 1 + hidden)[:, 0] = 1.0  # s = o
            elif init == "ema":
                logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
                w = self.gates.weight.view(k, 4, hidden, 1 + hidden, kernel, kernel)
                w.mul_(0.1)  # small random weights everywhere else
                w[:, :, 0] = 0.0
                c = kernel // 2
                w[:, 2, 0, 0, c, c] = 0.5  # g = tanh(0.5 o): nearly linear on [0, 1]
                b[:, 0, 0] = logit(alpha)  # input gate
                b[:, 1, 0] = logit(1 - alpha)  # forget gate
                b[:, 3, 0] = 4.0  # output gate open
                # undo the two tanh squashes at the peak: 1 -> tanh(0.5) -> tanh(.) * sigmoid(4)
                gain = 1.0 / (np.tanh(np.tanh(0.5)) * (1 / (1 + np.exp(-4.0))))
                self.out.weight.view(k, 1 + hidden)[:, 1] = float(gain)
            else:
                raise ValueError(f"unknown init {init!r}: identity or ema")

    def _interleave(self, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        n, k, hh, ww = o.shape
        return torch.cat([o.view(n, k, 1, hh, ww), h.view(n, k, self.hidden, hh, ww)], dim=2).view(n, k * (1 + self.hidden), hh, ww)

    def forward(self, o: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, k, hh, ww = o.shape
        g = self.gates(self._interleave(o, h)).view(n, k, 4, self.hidden, hh, ww)
        i, f, gg, og = torch.sigmoid(g[:, :, 0]), torch.sigmoid(g[:, :, 1]), torch.tanh(g[:, :, 2]), torch.sigmoid(g[:, :, 3])
        c_new = f * c.view(n, k, self.hidden, hh, ww) + i * gg
        h_new = og * torch.tanh(c_new)
        h_new = h_new.reshape(n, k * self.hidden, hh, ww)
        c_new = c_new.reshape(n, k * self.hidden, hh, ww)
        s = self.out(self._interleave(o, h_new))
        return s, h_new, c_new

    def zeros(self, n: int, size: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(n, self.k * self.hidden, size, size, device=device)
        return z, z.clone()

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {"w_gates": self.gates.weight.detach().cpu().numpy(), "b_gates": self.gates.bias.detach().cpu().numpy(),
                "w_out": self.out.weight.detach().cpu().numpy(), "b_out": self.out.bias.detach().cpu().numpy()}


def export(model: ConvLSTM, path: str | Path, heatmap_size: int, metadata: dict | None = None, steps: int = 6,
           tol: float = 1e-4) -> float:
    """Write the single-step ONNX (inputs o, h, c; outputs s, h_out, c_out) and check it.

    The check runs ``steps`` steps with the state carried, in torch and onnxruntime, on random
    heatmaps; returns the largest absolute difference and raises if it exceeds ``tol``.
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    model = model.eval().cpu()
    o = torch.rand(1, model.k, heatmap_size, heatmap_size)
    h, c = model.zeros(1, heatmap_size)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(model, (o, h, c), str(tmp), input_names=["o", "h", "c"], output_names=["s", "h_out", "c_out"],
                      dynamic_axes={n: {0: "n"} for n in ["o", "h", "c", "s", "h_out", "c_out"]}, opset_version=17,
                      dynamo=False)
    m = onnx.load(str(tmp))
    meta = {"num_landmarks": model.k, "hidden": model.hidden, "heatmap_size": heatmap_size, "kind": "stableface-convlstm-step"}
    meta.update(metadata or {})
    for key, value in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = key, json.dumps(value)
    onnx.save(m, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    th, tc = model.zeros(1, heatmap_size)
    nh, nc = th.numpy(), tc.numpy()
    worst = 0.0
    with torch.no_grad():
        for _ in range(steps):
            x = rng.random((1, model.k, heatmap_size, heatmap_size), dtype=np.float32)
            ts, th, tc = model(torch.from_numpy(x), th, tc)
            ns, nh, nc = sess.run(None, {"o": x, "h": nh, "c": nc})
            worst = max(worst, float(np.abs(ts.numpy() - ns).max()), float(np.abs(th.numpy() - nh).max()))
    if worst > tol:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export differs from torch by {worst:.2e} (> {tol:.0e}); nothing written")
    tmp.replace(path)
    return worst

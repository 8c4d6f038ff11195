"""PyTorch side of the @pfc/backbone parity test (run by torch-parity.slow.test.ts with Debian's python3-torch).

An iResNet written from the architecture in the spec (§3): stem conv3x3-BN-PReLU; blocks BN, conv3x3, BN, PReLU,
conv3x3 (stride), BN, plus a 1x1 conv + BN shortcut where the shape changes; stages 64/128/256/512, each halving the
resolution; head BN, dropout, flatten, FC (512*7*7 -> E), BN1d. Module names follow the reference's state-dict keys,
so `load_state_dict(strict=True)` checks every name and shape a @pfc safetensors file carries.

usage: torch_iresnet.py <weights.safetensors> <x.npy> <out-dir> <layers,comma-separated> <embedding> [<dEmb.npy>]
writes <out-dir>/y_eval.npy (inference-mode embeddings), <out-dir>/y_train.npy (training-mode embeddings, batch
statistics), <out-dir>/running_after.npy (layer1.0.bn1 running_mean after that training-mode pass) and
<out-dir>/torch.onnx (torch.onnx.export, opset 11, dynamic batch, input "data"); with dEmb.npy, the gradient of
sum(embeddings * dEmb) in training mode for every parameter, as <out-dir>/grad/<name>.npy (float32) and
<out-dir>/grad64/<name>.npy (the same model and inputs in float64).
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64, "F16": np.float16, "F64": np.float64}
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        a, b = spec["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=dtypes[spec["dtype"]]).reshape(spec["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers, embedding):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, cout) in enumerate(zip(layers, [64, 128, 256, 512])):
            blocks = [Block(cin, cout, 2)] + [Block(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, embedding)
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def main():
    weights, x_path, out, layers, embedding = sys.argv[1:6]
    demb = sys.argv[6] if len(sys.argv) > 6 else None
    torch.manual_seed(0)
    model = IResNet([int(v) for v in layers.split(",")], int(embedding))
    model.load_state_dict(read_safetensors(weights), strict=True)
    x = torch.from_numpy(np.load(x_path))
    model.eval()
    with torch.no_grad():
        np.save(f"{out}/y_eval.npy", model(x).numpy())
        torch.onnx.export(model, x, f"{out}/torch.onnx", input_names=["data"], output_names=["embedding"], dynamic_axes={"data": {0: "batch"}}, opset_version=11)
        model.train()
        np.save(f"{out}/y_train.npy", model(x).numpy())
        np.save(f"{out}/running_after.npy", model.layer1[0].bn1.running_mean.numpy())
    if demb is not None:
        d = torch.from_numpy(np.load(demb))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for sub, m, xs, ds in (("grad", model, x, d), ("grad64", None, x.double(), d.double())):
            if m is None:
                m = IResNet([int(v) for v in layers.split(",")], int(embedding))
                m.load_state_dict(state)
                m = m.double()
            m.train()
            m.zero_grad()
            m(xs).backward(ds)
            os.makedirs(f"{out}/{sub}", exist_ok=True)
            for name, p in m.named_parameters():
                np.save(f"{out}/{sub}/{name}.npy", p.grad.numpy())


if __name__ == "__main__":
    main()

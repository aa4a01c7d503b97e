#!/usr/bin/python3
"""Real third-party ONNX files for the ONNX importer's end-to-end test, with PyTorch's logits.

Each case is an .onnx file as `torch.onnx.export` (TorchScript exporter, eval mode) writes it,
or, for forms torch never emits (auto_pad, Gemm with transB=0/alpha/beta, Dropout, opset-11
Softmax over [N,C,1,1] ...), one built with onnx.helper whose reference logits come from the
same computation in torch.nn.functional. Cases:
  - torchvision resnet18, mobilenet_v2, mobilenet_v3_small, efficientnet_b0 at opsets 11, 13,
    14 and 17 (hardswish is HardSigmoid+Mul below 14, HardSwish from 14), a few num_classes,
    dynamic batch, and some with dynamic batch+height+width (run at two sizes);
  - `x.view(x.size(0), -1)` (a Reshape whose target comes from Shape/Gather/Unsqueeze/Concat)
    at opsets 11/13/17, Softmax heads at 11/13, a model with Pad (torch's pad-list chain),
    AvgPool, MaxPool(ceil_mode), Concat, LeakyRelu, PRelu, Transpose, MatMul, ReduceMean,
    BatchNorm1d, Clip, HardSigmoid, Tanh at 11/13/17;
  - hand-built: auto_pad SAME_UPPER/SAME_LOWER/VALID on Conv and pools, Gemm forms, Dropout,
    Identity, Constant, Squeeze/Unsqueeze.
Weights are random but look trained (BatchNorm statistics calibrated on random images, then
perturbed; classifier std 1/sqrt(fan_in)), so BN folding and eps handling are really exercised.

Cached under $MODEX_CACHE_DIR (default ~/.cache/modex)/onnx-fixtures/<key>/, <key> hashing this
file and the torch/torchvision/onnx versions; older keys are deleted. Each case is a folder
written under a temporary name and renamed when complete:
    meta.json, model.onnx, <run>.input.bin, <run>.logits.bin (raw little-endian float32)
meta.json: {"name", "opset", "input", "output", "runs": {run: {"dims", "input", "logits",
"logits_dims"}}, "expect": {...}} where expect may list "ops" the import must produce and
"reshape_targets".

    /usr/bin/python3 tests/io/make_onnx_fixtures.py [--list] [--only NAME ...] [--jobs 2]

Run it with Debian's interpreter (/usr/bin/python3): it needs torch, torchvision and onnx.
"""
import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# The cases, as plain data (no torch import needed to list them).

SIZE = 224


def _runs(size=SIZE, extra=None):
    runs = {"b1": [1, 3, size, size], "b4": [4, 3, size, size]}
    runs.update(extra or {})
    return runs


def all_specs():
    specs = []

    def tv(arch, opset, num_classes, hw=False, size=SIZE):
        name = f"{arch}-op{opset}" + ("-hw" if hw else "")
        extra = {"odd": [2, 3, 200, 176]} if hw else None
        specs.append(dict(name=name, kind="torchvision", arch=arch, opset=opset, num_classes=num_classes,
                          dynamic_hw=hw, runs=_runs(size, extra)))

    tv("resnet18", 11, 10)
    tv("resnet18", 17, 1000, hw=True)
    tv("mobilenet_v2", 13, 7)
    tv("mobilenet_v3_small", 11, 10)
    tv("mobilenet_v3_small", 14, 1000, hw=True)
    tv("efficientnet_b0", 13, 5)
    tv("efficientnet_b0", 17, 10, hw=True)
    for opset in (11, 13, 17):
        specs.append(dict(name=f"view-chain-op{opset}", kind="custom", model="ViewChain", opset=opset,
                          dynamic_hw=False, runs=_runs(64),
                          expect={"reshape_targets": [[0, 256]], "absent_ops": ["Flatten"]}))
        specs.append(dict(name=f"misc-ops-op{opset}", kind="custom", model="MiscOps", opset=opset,
                          dynamic_hw=opset == 17, runs=_runs(64, {"odd": [2, 3, 48, 40]} if opset == 17 else None),
                          expect={"ops": ["Pad", "AveragePool", "MaxPool", "Concat", "LeakyRelu", "PRelu",
                                          "Transpose", "MatMul", "ReduceMean", "BatchNorm", "Clip",
                                          "HardSigmoid", "Tanh"]}))
    for opset in (11, 13):
        specs.append(dict(name=f"softmax-head-op{opset}", kind="custom", model="SoftmaxHead", opset=opset,
                          dynamic_hw=False, runs=_runs(64), expect={"ops": ["Softmax"]}))
    for opset in (11, 13):
        specs.append(dict(name=f"auto-pad-op{opset}", kind="handmade", builder="auto_pad", opset=opset,
                          runs={"b1": [1, 3, 20, 20], "b4": [4, 3, 20, 20]}))
    for opset in (11, 13, 17):
        specs.append(dict(name=f"gemm-forms-op{opset}", kind="handmade", builder="gemm_forms", opset=opset,
                          runs={"b1": [1, 12], "b4": [4, 12]}))
        # Its opset-11 Softmax(axis=1) over [N, C, 1, 1] imports as a per-axis softmax, which
        # modex's ONNX writer writes only from opset 13 on: re-export that one at 13.
        specs.append(dict(name=f"misc-forms-op{opset}", kind="handmade", builder="misc_forms", opset=opset,
                          write_opset=max(opset, 13), runs={"b1": [1, 3, 8, 8], "b4": [4, 3, 8, 8]}))
    return specs


# ---------------------------------------------------------------------------------------------
# Cache location and key.

def cache_base():
    if os.environ.get("MODEX_CACHE_DIR"):
        return Path(os.environ["MODEX_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modex"


def _version(module):
    try:
        from importlib import metadata
        return metadata.version(module)
    except Exception:  # Debian's packages may lack dist-info
        return __import__(module).__version__


def fixture_key():
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(";".join(f"{m}={_version(m)}" for m in ("torch", "torchvision", "onnx")).encode())
    return h.hexdigest()[:16]


def fixture_root():
    return cache_base() / "onnx-fixtures" / fixture_key()


def load_meta(case_dir):
    return json.loads((Path(case_dir) / "meta.json").read_text())


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _seed_of(text):
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# Models (torch imported lazily).

def randomize_(model, seed, calib_shape=(4, 3, 160, 160)):
    """Random weights that look trained: perturbed BN affine, BN statistics calibrated on random
    images (with a variance floor against dead channels), small residual branches, classifier
    std 1/sqrt(fan_in)."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    randn = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    rand = lambda shape: torch.rand(shape, generator=g)  # noqa: E731
    bns = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                n = m.num_features
                m.weight.copy_(torch.where(rand(n) < 0.1, -1.0, 1.0) * (0.5 + rand(n)))
                m.bias.copy_(0.2 * randn(n))
                bns.append(m)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.1 * randn(m.bias.shape))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(randn(m.weight.shape) / m.in_features ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias.shape))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.1 + 0.3 * rand(m.weight.shape))
        for m in _residual_branch_last_bns(model):
            m.weight.mul_(0.25)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        model(randn(calib_shape))
        model.eval()
        for m in bns:
            m.momentum = 0.1
            m.running_var.clamp_(min=float(0.05 * m.running_var.median()))
            m.running_mean.add_(0.05 * randn(m.num_features))
    return model


def _residual_branch_last_bns(model):
    from torch import nn
    from torchvision.models.resnet import BasicBlock, Bottleneck
    for mod in model.modules():
        if isinstance(mod, BasicBlock):
            yield mod.bn2
        elif isinstance(mod, Bottleneck):
            yield mod.bn3
        elif getattr(mod, "use_res_connect", False):
            yield [m for m in mod.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def _custom_models():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ViewChain(nn.Module):
        """`x.view(x.size(0), -1)` before the classifier: Shape/Gather/Unsqueeze/Concat/Reshape."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 64, 3, stride=2, padding=1)
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            x = F.relu(self.bn(self.conv(x)))
            x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc(x.view(x.size(0), -1))

    class SoftmaxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16, 12)

        def forward(self, x):
            x = F.relu(self.conv(x))
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return F.softmax(self.fc(x) * 4.0, dim=1)

    class MiscOps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.prelu = nn.PReLU(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.conv3 = nn.Conv2d(8, 16, 1)
            self.proj = nn.Parameter(torch.randn(48, 24) / 48 ** 0.5)
            self.bn1d = nn.BatchNorm1d(24)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            x = self.prelu(self.conv1(x))
            x = F.leaky_relu(self.bn(self.dw(x)), 0.1)
            x = torch.tanh(self.conv3(x))
            # Three branches of equal size (16x16 from 32x32, 12x10 from 24x20). No ceil_mode
            # pool right after a zero Pad: ONNX Runtime 1.30's PadFusion folds such a Pad into the
            # pool's pads without accounting for ceil_mode and changes the output size (it does so
            # only when the pads are constant, which they are once modex has imported the chain).
            a = F.avg_pool2d(F.pad(x, (1, 1, 0, 2)), 3, stride=2, count_include_pad=False)
            b = F.max_pool2d(F.pad(x, (0, 1, 1, 0), value=-0.25), 3, stride=2, ceil_mode=True)
            c = F.avg_pool2d(x, 3, stride=2, ceil_mode=True, count_include_pad=False)
            x = torch.cat([a, b, c], 1)
            x = F.hardsigmoid(x) * x.clamp(-1.0, 2.0)
            t = x.permute(0, 2, 3, 1) @ self.proj
            m = t.permute(0, 3, 1, 2).mean(dim=(2, 3))
            return self.fc(self.bn1d(m)) / 2 + 1

    return dict(ViewChain=ViewChain, SoftmaxHead=SoftmaxHead, MiscOps=MiscOps)


def _torch_model(spec):
    import torchvision
    seed = _seed_of(spec["name"])
    if spec["kind"] == "torchvision":
        model = getattr(torchvision.models, spec["arch"])(num_classes=spec["num_classes"])
    else:
        model = _custom_models()[spec["model"]]()
    return randomize_(model.eval(), seed, calib_shape=(4, *spec["runs"]["b1"][1:]))


def _export(model, spec, path):
    import torch
    dims = spec["runs"]["b1"]
    axes = {0: "batch"}
    if spec.get("dynamic_hw"):
        axes.update({2: "height", 3: "width"})
    torch.onnx.export(model, torch.zeros(dims), str(path), opset_version=spec["opset"],
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": axes, "logits": {0: "batch"}}, do_constant_folding=True)


# ---------------------------------------------------------------------------------------------
# Hand-built models: forms torch.onnx.export never writes. Each returns (ModelProto, reference)
# where reference(x) computes the same function with torch.nn.functional.

def _handmade(builder, opset, seed):
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(seed)
    inits = []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return torch.from_numpy(np.asarray(array, dtype=np.float32))

    def conv_w(name, o, i, k):
        return init(name, rng.randn(o, i, k, k) / np.sqrt(i * k * k))

    def int64s(name, values):
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))

    nodes = []
    if builder == "auto_pad":
        # 20x20 input: every SAME form resolved from the static spatial size.
        w1, b1 = conv_w("w1", 8, 3, 3), init("b1", rng.randn(8) * 0.1)
        w2 = conv_w("w2", 8, 8, 5)
        w3 = conv_w("w3", 8, 8, 4)
        w4 = conv_w("w4", 6, 8, 1)
        fc_b = init("fc_B", rng.randn(6, 5) / np.sqrt(6))
        fc_c = init("fc_C", rng.randn(1, 5) * 0.1)
        nodes += [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv_same_upper_s2", strides=[2, 2], auto_pad="SAME_UPPER"),
            helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
            # (ONNX Runtime refuses auto_pad SAME with dilations, so none here: unit-tested only.)
            helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv_same_lower_k5", auto_pad="SAME_LOWER"),
            helper.make_node("MaxPool", ["c2"], ["p1"], "maxpool_same_upper", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
            helper.make_node("Conv", ["p1", "w3"], ["c3"], "conv_same_lower_k4", kernel_shape=[4, 4], auto_pad="SAME_LOWER"),
            helper.make_node("Sigmoid", ["c3"], ["s3"], "sigmoid"),
            helper.make_node("AveragePool", ["s3"], ["p2"], "avgpool_same_lower", kernel_shape=[3, 3], strides=[2, 2],
                             auto_pad="SAME_LOWER", count_include_pad=0),
            helper.make_node("Conv", ["p2", "w4"], ["c4"], "conv_valid", auto_pad="VALID"),
            helper.make_node("GlobalAveragePool", ["c4"], ["g"], "gap"),
            helper.make_node("Flatten", ["g"], ["f"], "flatten"),
            helper.make_node("Gemm", ["f", "fc_B", "fc_C"], ["logits"], "fc", alpha=0.5, beta=2.0),
        ]

        def reference(x):
            y = F.relu(F.conv2d(F.pad(x, (0, 1, 0, 1)), w1, b1, stride=2))          # 20 -> 10
            y = F.conv2d(y, w2, padding=2)                                           # k5: total 4
            y = F.max_pool2d(F.pad(y, (0, 1, 0, 1), value=-float("inf")), 3, stride=2)  # 10 -> 5, total 1
            y = torch.sigmoid(F.conv2d(F.pad(y, (2, 1, 2, 1)), w3))                  # k4: total 3, lower 2
            y = F.avg_pool2d(y, 3, stride=2, padding=1, count_include_pad=False)    # 5 -> 3, total 2
            y = F.conv2d(y, w4)
            y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            return 0.5 * (y @ fc_b) + 2.0 * fc_c
        in_dims, out_dims = ["N", 3, 20, 20], ["N", 5]
    elif builder == "gemm_forms":
        b1 = init("B1", rng.randn(12, 16) / np.sqrt(12))   # transB=0
        c1 = init("C1", rng.randn(16) * 0.1)
        b2 = init("B2", rng.randn(10, 16) / np.sqrt(16))   # transB=1
        c2 = init("C2", rng.randn(1, 10) * 0.1)
        b3 = init("B3", rng.randn(10, 7) / np.sqrt(10))
        nodes += [
            helper.make_node("Gemm", ["x", "B1", "C1"], ["h1"], "gemm_transb0", alpha=0.75, beta=1.5),
            helper.make_node("Relu", ["h1"], ["r1"], "relu"),
            helper.make_node("Gemm", ["r1", "B2", "C2"], ["h2"], "gemm_transb1", transB=1, alpha=1.25),
            helper.make_node("Tanh", ["h2"], ["t2"], "tanh"),
            helper.make_node("Gemm", ["t2", "B3"], ["logits"], "gemm_no_c", beta=0.0),
        ]

        def reference(x):
            y = torch.relu(0.75 * (x @ b1) + 1.5 * c1)
            y = torch.tanh(1.25 * (y @ b2.T) + c2)
            return y @ b3
        in_dims, out_dims = ["N", 12], ["N", 7]
    elif builder == "misc_forms":
        w1 = conv_w("w1", 4, 3, 3)
        bn = [init(n, v) for n, v in (("bn_s", 0.5 + rng.rand(4)), ("bn_b", rng.randn(4) * 0.2),
                                       ("bn_m", rng.randn(4) * 0.1), ("bn_v", 0.5 + rng.rand(4)))]
        slope = init("slope", 0.1 + 0.2 * rng.rand(4, 1, 1))
        fc_w = init("fc_w", rng.randn(6, 4) / 2.0)
        int64s("axes23", [2, 3])
        softmax_attrs = {"axis": 1}
        nodes += [
            helper.make_node("Conv", ["x", "w1"], ["c1"], "conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"], "bn", epsilon=1e-3),
            helper.make_node("PRelu", ["b1", "slope"], ["p1"], "prelu"),
            helper.make_node("Identity", ["p1"], ["i1"], "identity"),
        ]
        if opset >= 12:
            init("ratio", 0.5)  # a Dropout-12 input; inference ignores it
            nodes.append(helper.make_node("Dropout", ["i1", "ratio"], ["d1", "mask"], "dropout"))
        else:
            nodes.append(helper.make_node("Dropout", ["i1"], ["d1"], "dropout", ratio=0.3))
        nodes += [
            helper.make_node("Constant", [], ["two"], "two", value=numpy_helper.from_array(np.array(2.0, np.float32))),
            helper.make_node("Clip", ["d1", "", "two"], ["k1"], "clip_max_only"),
            helper.make_node("ReduceMean", ["k1"], ["m1"], "mean", axes=[2, 3], keepdims=1),
            helper.make_node("Softmax", ["m1"], ["sm"], "softmax_n_c_1_1", **softmax_attrs),
        ]
        if opset >= 13:
            nodes.append(helper.make_node("Squeeze", ["sm", "axes23"], ["sq"], "squeeze"))
        else:
            nodes.append(helper.make_node("Squeeze", ["sm"], ["sq"], "squeeze", axes=[2, 3]))
        nodes += [
            helper.make_node("Transpose", ["fc_w"], ["fc_w_t"], "transpose_w", perm=[1, 0]),
            helper.make_node("MatMul", ["sq", "fc_w_t"], ["mm"], "matmul"),
            helper.make_node("HardSigmoid", ["mm"], ["logits"], "hardsigmoid", alpha=0.3, beta=0.4),
        ]

        def reference(x):
            y = F.conv2d(x, w1, padding=1)
            y = F.batch_norm(y, bn[2], bn[3], bn[0], bn[1], eps=1e-3)
            y = torch.where(y >= 0, y, y * slope)
            y = y.clamp(max=2.0).mean(dim=(2, 3), keepdim=True)
            y = torch.softmax(y, dim=1).flatten(1)
            return torch.clamp(0.3 * (y @ fc_w.T) + 0.4, 0.0, 1.0)
        in_dims, out_dims = ["N", 3, 8, 8], ["N", 6]
    else:
        raise ValueError(builder)

    graph = helper.make_graph(
        nodes, builder, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modex-fixtures")
    model.ir_version = 7 if opset <= 14 else 8
    onnx.checker.check_model(model, full_check=True)
    return model, reference


# ---------------------------------------------------------------------------------------------
# Generation

def generate_case(spec, root):
    import numpy as np
    import onnx
    import torch
    torch.set_num_threads(1)
    t0 = time.time()
    final = root / spec["name"]
    tmp = root / f".{spec['name']}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seed = _seed_of(spec["name"])
    if spec["kind"] == "handmade":
        proto, reference = _handmade(spec["builder"], spec["opset"], seed)
        onnx.save(proto, str(tmp / "model.onnx"))
        forward = reference
    else:
        model = _torch_model(spec)
        _export(model, spec, tmp / "model.onnx")
        onnx.checker.check_model(onnx.load(str(tmp / "model.onnx")), full_check=True)
        forward = model
    meta = dict(name=spec["name"], opset=spec["opset"], input="image" if spec["kind"] != "handmade" else "x",
                output="logits", runs={}, expect=spec.get("expect", {}), seconds=None)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for run, dims in spec["runs"].items():
            x = torch.randn(dims, generator=g)
            y = forward(x).float()
            x.numpy().astype("<f4").tofile(tmp / f"{run}.input.bin")
            y.numpy().astype("<f4").tofile(tmp / f"{run}.logits.bin")
            meta["runs"][run] = dict(dims=list(dims), input=f"{run}.input.bin", logits=f"{run}.logits.bin",
                                     logits_dims=list(y.shape), max_abs_logit=float(y.abs().max()))
            if not np.isfinite(y.numpy()).all():
                raise RuntimeError(f"{spec['name']}/{run}: non-finite logits")
    meta["seconds"] = round(time.time() - t0, 1)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return spec["name"], meta["seconds"]


def ensure(names=None, jobs=2, log=None):
    """Generates whichever requested cases are missing; returns the fixture root."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = fixture_root()
    specs = [s for s in all_specs() if names is None or s["name"] in names]
    if names is not None and len(specs) != len(set(names)):
        raise ValueError(f"unknown cases: {sorted(set(names) - {s['name'] for s in specs})}")
    with _locked(root.parent / ".lock"):
        if root.parent.is_dir():  # other keys are stale by construction: reclaim the disk
            for other in root.parent.iterdir():
                if other.is_dir() and other.name != root.name:
                    shutil.rmtree(other, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        todo = [s for s in specs if not (root / s["name"]).is_dir()]
        if not todo:
            return root
        todo.sort(key=lambda s: s["kind"] != "torchvision")  # big ones first
        log(f"generating {len(todo)} ONNX fixtures into {root} ({jobs} workers)")
        t0 = time.time()
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(generate_case, s, root) for s in todo]
            for fut in concurrent.futures.as_completed(futures):
                name, seconds = fut.result()
                log(f"  {name}: {seconds:.1f} s")
        log(f"generated {len(todo)} fixtures in {time.time() - t0:.0f} s")
    return root


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        root = fixture_root()
        print(root)
        for s in all_specs():
            print(f"  {s['name']:32s} {'cached' if (root / s['name']).is_dir() else 'missing'}")
        return
    print(ensure(args.only, args.jobs))


if __name__ == "__main__":
    import warnings
    warnings.filterwarnings("ignore")
    main()

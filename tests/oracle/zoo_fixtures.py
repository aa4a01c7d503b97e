#!/usr/bin/python3
"""Golden fixtures for the oracle tests: real `torch.save` checkpoints and PyTorch's logits.

Every zoo architecture gets two checkpoints with seeded random weights, made to look trained:
  - `zoo-<arch>-a`: num_classes 10, inputs at 224 (batch 1 and 4; a few also a non-square one),
  - `zoo-<arch>-b`: num_classes 7 or 1000, inputs at 160 (a multiple of 32, the deepest stride,
    so every architecture sees whole feature maps; the non-square run covers the other case).
Weights: torchvision's own initialisation (kaiming for convs), then BatchNorm gamma/beta and conv
biases randomised, the last BN of every residual branch scaled down (as in trained nets: random
full-strength branches make deep nets chaotic, float32 rounding alone then moves resnet152's
logits by 3e-4), and BN running statistics calibrated on random images (so activations stay in a
trained-like range), with near-dead channels' variance floored. BN folding, eps, biases and the
running statistics are thus really exercised: default init (mean 0, var 1, gamma 1, beta 0) would
hide bugs. Classifiers get std 1/sqrt(fan_in), so logits are O(1), not O(0.01). Two probes per
case are recorded and gated (see _probes): float32-vs-float64 error and BN-eps sensitivity.

Variants exercise the checkpoint reader: the same kind of weights written as a training dict
with config, DataParallel, safetensors (hand-written), tied/offset storages, non-contiguous
strides, pickle protocol 4, f16/bf16, big-endian, an `archive/` prefix, and wrappers.

Everything is cached under $MODEX_CACHE_DIR (default ~/.cache/modex)/oracle-fixtures/<key>/, where
<key> hashes this file's code (its syntax tree without doc strings and comments, so editing prose
costs nothing) and the torch/torchvision versions; stale keys are deleted. Each case is a
folder written under a temporary name and renamed when complete:
    meta.json, <checkpoint file>, <run>.input.bin, <run>.logits.bin (raw little-endian float32).

    /usr/bin/python3 tests/oracle/zoo_fixtures.py [--jobs 2] [--only NAME ...] [--list]

Must run under Debian's interpreter (/usr/bin/python3): it has torch, torchvision and onnx.
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

HERE = Path(__file__).resolve().parent

# The zoo, as (architecture, num_classes of checkpoint B). Optional architectures are kept in a
# separate list so they can be trimmed without touching the rest.
ZOO = [
    ("resnet18", 1000), ("resnet34", 7), ("resnet50", 1000), ("resnet101", 7), ("resnet152", 1000),
    ("efficientnet_b0", 7), ("efficientnet_b1", 1000), ("efficientnet_b2", 7),
    ("efficientnet_b3", 1000), ("efficientnet_b4", 7), ("efficientnet_b5", 1000),
    ("efficientnet_b6", 7), ("efficientnet_b7", 1000),
    ("mobilenet_v2", 7), ("mobilenet_v3_small", 1000), ("mobilenet_v3_large", 7),
]
OPTIONAL_ZOO = [("resnext50_32x4d", 7), ("wide_resnet50_2", 1000)]
NUM_CLASSES_A = 10
SIZE_A = 224
SIZE_B = 160
# Non-square, not a multiple of 32: dynamic height/width must really be dynamic.
ODD_DIMS = [1, 3, 200, 176]
ODD_ARCHS = {"resnet18", "resnet50", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small",
             "mobilenet_v3_large"}

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def zoo_archs(include_optional=True):
    return [a for a, _ in ZOO + (OPTIONAL_ZOO if include_optional else [])]


def _runs(size, batch_sizes=(1, 4), odd=False):
    runs = {f"b{b}": [b, 3, size, size] for b in batch_sizes}
    if odd:
        runs["odd"] = list(ODD_DIMS)
    return runs


def all_specs(include_optional=True):
    """Every fixture case, as plain data (cheap: no torch import)."""
    specs = []
    for arch, nc_b in ZOO + (OPTIONAL_ZOO if include_optional else []):
        specs.append(dict(name=f"zoo-{arch}-a", kind="zoo", arch=arch, num_classes=NUM_CLASSES_A,
                          input_size=SIZE_A, runs=_runs(SIZE_A, odd=arch in ODD_ARCHS),
                          checkpoint=f"{arch}_a.pth", expect={}))
        specs.append(dict(name=f"zoo-{arch}-b", kind="zoo", arch=arch, num_classes=nc_b,
                          input_size=SIZE_B, runs=_runs(SIZE_B), checkpoint=f"{arch}_b.pth",
                          expect={}))

    def variant(name, arch, nc, checkpoint, size=224, **expect):
        specs.append(dict(name=f"variant-{name}", kind="variant", variant=name, arch=arch,
                          num_classes=nc, input_size=size, runs=_runs(size),
                          checkpoint=checkpoint, expect=expect))

    # Checkpoint layouts.
    variant("train_dict_config", "resnet18", 10, "train_dict_config.pth", size=192,
            class_names=FASHION_NAMES, metadata_input_size=192,
            mean=[0.2860, 0.2860, 0.2860], std=[0.3530, 0.3530, 0.3530])
    variant("state_dict_key", "mobilenet_v2", 12, "state_dict_key.pth.tar")
    variant("model_key_model_name", "efficientnet_b0", 5, "model_key_model_name.pt")
    variant("net_key_module_prefix", "mobilenet_v3_small", 10, "ckpt.pth")
    variant("dataparallel", "resnet18", 10, "dataparallel.pth")
    variant("safetensors", "resnet18", 10, "model.safetensors")
    variant("safetensors_f16", "mobilenet_v3_large", 10, "model_f16.safetensors")
    # Storage-level variety.
    variant("tied_storage", "resnet18", 10, "tied_storage.pth")
    variant("strided", "resnet18", 10, "strided.pth")
    variant("protocol4", "resnet18", 10, "protocol4.pth")
    variant("f16", "resnet18", 10, "f16.pth")
    variant("bf16", "efficientnet_b0", 10, "bf16.pth")
    variant("archive_prefix", "resnet18", 10, "archive_prefix.pth")
    variant("big_endian", "resnet18", 10, "big_endian.pth")
    # Wrappers: a torchvision backbone under a prefix with its own linear head.
    variant("wrapper_resnet18", "resnet18", 6, "wrapper_resnet18.pth",
            wrapper={"backbone_prefix": "backbone.", "head": ["head"]})
    variant("wrapper_effnet_features", "efficientnet_b0", 4, "wrapper_effnet_features.pth",
            wrapper={"backbone_prefix": "backbone.", "head": ["classifier", "classifier.1"]})
    variant("wrapper_effnet_full", "efficientnet_b0", 3, "wrapper_effnet_full.pth",
            wrapper={"backbone_prefix": "backbone.", "head": ["classifier", "classifier.1"]})
    variant("prefix_backbone", "mobilenet_v3_large", 8, "prefix_backbone.pth")
    return specs


# ---------------------------------------------------------------------------------------------
# Cache location and key.

def cache_base():
    if os.environ.get("MODEX_CACHE_DIR"):
        return Path(os.environ["MODEX_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modex"


def _dist_version(name):
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:  # Debian's packages may lack dist-info: ask the module itself.
        mod = __import__(name)
        return mod.__version__


def _code_fingerprint(source):
    """The module's syntax tree without doc strings: what the generated data depends on."""
    import ast
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def fixture_key():
    h = hashlib.sha256()
    h.update(_code_fingerprint(Path(__file__).read_text()).encode())
    h.update(f"torch={_dist_version('torch')};torchvision={_dist_version('torchvision')}".encode())
    return h.hexdigest()[:16]


def fixture_root():
    return cache_base() / "oracle-fixtures" / fixture_key()


def case_dir(name, root=None):
    return (root or fixture_root()) / name


def load_meta(name, root=None):
    path = case_dir(name, root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"fixture {name} missing: {path} (run tests/oracle/zoo_fixtures.py)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Model construction (torch imported lazily so that the test process stays light).

def _seed_of(text):
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def randomize_(model, seed, calib_size=160):
    """Makes a freshly built model look trained; see the module doc string."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g)

    def rand(shape):
        return torch.rand(shape, generator=g)

    bns = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                sign = torch.where(rand(n) < 0.1, -1.0, 1.0)
                m.weight.copy_(sign * (0.5 + rand(n)))
                m.bias.copy_(0.2 * randn(n))
                bns.append(m)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(0.1 * randn(m.bias.shape))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(randn(m.weight.shape) / m.in_features ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * randn(m.bias.shape))
        # Trained residual nets keep their residual branches small next to the identity path;
        # random ones with gamma ~1 are chaotic: float32 rounding alone then moves resnet152's
        # logits by ~3e-4 relative, above the test tolerance. Scale the branches' last BN.
        for m in _residual_branch_last_bns(model):
            m.weight.mul_(0.25)
        # Calibrate running statistics on random images (cumulative average), as if trained.
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        model(randn((4, 3, calib_size, calib_size)))
        model.eval()
        for m in bns:
            m.momentum = 0.1
            # Random nets have near-dead channels (variance ~1e-5) that a slightly different
            # input turns into huge activations; floor the variance relative to the layer's
            # median, which keeps small (eps-sensitive) variances but nothing pathological.
            floor = 0.05 * m.running_var.median()
            m.running_var.clamp_(min=float(floor))
            m.num_batches_tracked.fill_(1000 + int(rand(1).item() * 5000))
    return model


def _residual_branch_last_bns(model):
    """The BatchNorm that ends each residual branch (torchvision's blocks)."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock, Bottleneck
    for mod in model.modules():
        if isinstance(mod, BasicBlock):
            yield mod.bn2
        elif isinstance(mod, Bottleneck):
            yield mod.bn3
        elif getattr(mod, "use_res_connect", False):  # MBConv, InvertedResidual (v2 and v3)
            yield [m for m in mod.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def build_model(arch, num_classes, seed):
    import torchvision
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    return randomize_(model, seed)


def _wrapper_classes():
    import torch
    import torchvision
    from torch import nn

    class ResNetWithHead(nn.Module):
        """backbone = torchvision resnet18 with fc = Identity; head = Linear(512, n)."""
        def __init__(self, num_classes):
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.backbone.fc = nn.Identity()
            self.head = nn.Linear(512, num_classes)

        def forward(self, x):
            return self.head(self.backbone(x))

    class EffNetFeaturesWithClassifier(nn.Module):
        """backbone = efficientnet_b0().features; global average pool; Sequential(Dropout, Linear)."""
        def __init__(self, num_classes):
            super().__init__()
            self.backbone = torchvision.models.efficientnet_b0().features
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.backbone(x)), 1))

    class EffNetFullWithClassifier(nn.Module):
        """backbone = efficientnet_b0 with classifier = Identity; classifier = Sequential(Dropout, Linear)."""
        def __init__(self, num_classes):
            super().__init__()
            self.backbone = torchvision.models.efficientnet_b0()
            self.backbone.classifier = nn.Identity()
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(self.backbone(x))

    class Prefixed(nn.Module):
        """A complete torchvision model held as `self.backbone` (keys `backbone.*`)."""
        def __init__(self, arch, num_classes):
            super().__init__()
            self.backbone = getattr(torchvision.models, arch)(num_classes=num_classes)

        def forward(self, x):
            return self.backbone(x)

    return ResNetWithHead, EffNetFeaturesWithClassifier, EffNetFullWithClassifier, Prefixed


# ---------------------------------------------------------------------------------------------
# Writers.

SAFETENSORS_DTYPES = {
    "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def tensor_bytes(t):
    """Raw little-endian C-order bytes of a tensor (numpy has no bfloat16: go through int16)."""
    import torch
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """The safetensors layout: u64 LE header length, JSON header (padded with spaces to 8 bytes
    like the reference writer), then the tensors back to back in header order."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {"dtype": SAFETENSORS_DTYPES[str(t.dtype).replace("torch.", "")],
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def storage_dtypes(zip_path):
    """{storage key: torch dtype} of a torch.save zip, from its data.pkl persistent ids."""
    import pickle
    import zipfile
    import torch
    seen = {}

    class Recorder(pickle.Unpickler):
        def persistent_load(self, pid):
            _, storage_type, key, _, numel = pid
            dtype = storage_type.dtype
            seen[key] = dtype
            return storage_type(numel)

    with zipfile.ZipFile(zip_path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        Recorder(z.open(pkl)).load()
    return seen, torch


def rewrite_zip(src, dst, prefix=None, big_endian=False):
    """Re-zips a torch.save file with Python's zipfile (local headers carry the sizes, no 64-byte
    alignment, no zip64 record): optionally another top-level folder, optionally big-endian."""
    import zipfile
    dtypes, torch = storage_dtypes(src) if big_endian else ({}, None)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            old_prefix, rest = info.filename.split("/", 1)
            data = zin.read(info)
            if big_endian and rest == "byteorder":
                data = b"big"
            elif big_endian and rest.startswith("data/"):
                dtype = dtypes[rest[len("data/"):]]
                size = torch.empty((), dtype=dtype).element_size()
                if size > 1:
                    arr = bytearray(data)
                    for i in range(size):
                        arr[i::size] = data[size - 1 - i::size]
                    data = bytes(arr)
            zout.writestr(f"{prefix or old_prefix}/{rest}", data)
        if big_endian and f"{old_prefix}/byteorder" not in zin.namelist():
            zout.writestr(f"{prefix or old_prefix}/byteorder", b"big")


# ---------------------------------------------------------------------------------------------
# Case generation.

def _forward_runs(model, spec, seed, out_dir):
    """Runs PyTorch on seeded N(0, 1) inputs (like normalised images). The batch-1 input is the
    first image of the batch-4 input, and its reference logits are row 0 of the batch-4 result:
    PyTorch's answer for that image either way (up to ~1e-7 rounding), at one forward's cost."""
    import torch
    g = torch.Generator().manual_seed(seed ^ 0x5EED)
    runs = {}
    max_abs = 0.0
    with torch.no_grad():
        computed = {}
        for tag, dims in sorted(spec["runs"].items(), key=lambda kv: -kv[1][0]):
            b1_of_b4 = tag == "b1" and "b4" in computed and dims[1:] == spec["runs"]["b4"][1:]
            if b1_of_b4:
                x, y = computed["b4"][0][:1], computed["b4"][1][:1]
            else:
                x = torch.randn(dims, generator=g)
                y = model(x)
            computed[tag] = (x, y)
            if not torch.isfinite(y).all():
                raise RuntimeError(f"{spec['name']}: non-finite logits for run {tag}")
            (out_dir / f"{tag}.input.bin").write_bytes(tensor_bytes(x))
            (out_dir / f"{tag}.logits.bin").write_bytes(tensor_bytes(y))
            runs[tag] = {"input": f"{tag}.input.bin", "dims": list(dims),
                         "logits": f"{tag}.logits.bin", "logits_dims": list(y.shape),
                         "max_abs_logit": float(y.abs().max())}
            max_abs = max(max_abs, float(y.abs().max()))
    if not 0.1 <= max_abs <= 100:
        raise RuntimeError(f"{spec['name']}: max |logit| {max_abs:.3g} is not in a sane range")
    return runs


MAX_FLOAT64_ERROR = 2e-5
PROBE_DIMS = [1, 3, 112, 112]


def _probes(model, seed):
    """Two checks of the fixture itself, on a small seeded input (cheap; float64 convolutions
    have no fast path in Debian's torch):
      float64_error: relative difference of float32 and float64 logits, i.e. how far rounding
        alone moves them. It must stay well under the test tolerance (1e-4), or a correct
        exporter could fail on an ill-conditioned random network.
      eps_sensitivity: relative change when every BatchNorm uses the other common eps
        (1e-5 <-> 1e-3); far above the tolerance means a wrong eps cannot slip through."""
    import copy
    import torch
    from torch import nn
    x = torch.randn(PROBE_DIMS, generator=torch.Generator().manual_seed(seed ^ 0x9E0B))
    with torch.no_grad():
        y32 = model(x).double()
        y64 = copy.deepcopy(model).double()(x.double())
        f64 = float((y32 - y64).abs().max() / y64.abs().max())
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        eps = None
        if bns:
            old = [m.eps for m in bns]
            for m in bns:
                m.eps = 1e-3 if m.eps < 1e-4 else 1e-5
            eps = float((model(x).double() - y32).abs().max() / y32.abs().max())
            for m, e in zip(bns, old):
                m.eps = e
    return f64, eps


def _make_variant(spec, seed, out_dir):
    """Writes the variant's checkpoint; returns the model whose logits it must reproduce."""
    import collections
    import copy
    import torch
    from torch import nn
    v, arch, nc = spec["variant"], spec["arch"], spec["num_classes"]
    path = out_dir / spec["checkpoint"]
    ResNetWithHead, EffNetFeatures, EffNetFull, Prefixed = _wrapper_classes()

    if v == "wrapper_resnet18":
        model = randomize_(ResNetWithHead(nc), seed)
        torch.save(model.state_dict(), path)
        return model
    if v == "wrapper_effnet_features":
        model = randomize_(EffNetFeatures(nc), seed)
        torch.save(model.state_dict(), path)
        return model
    if v == "wrapper_effnet_full":
        model = randomize_(EffNetFull(nc), seed)
        torch.save(model.state_dict(), path)
        return model
    if v == "prefix_backbone":
        model = randomize_(Prefixed(arch, nc), seed)
        torch.save(model.state_dict(), path)
        return model

    model = build_model(arch, nc, seed)
    sd = model.state_dict()
    if v == "train_dict_config":
        # A real optimizer state (momentum buffers shaped like the weights: a loader that picks
        # up tensors anywhere in the file would get confused) from one step on a copy.
        twin = copy.deepcopy(model).train()
        opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
        twin(torch.randn(2, 3, 64, 64)).logsumexp(1).mean().backward()
        opt.step()
        torch.save({"model_state_dict": sd, "optimizer_state_dict": opt.state_dict(),
                    "epoch": 12, "best_accuracy": 0.913, "scheduler": None,
                    "config": {"architecture": arch, "num_classes": nc,
                               "input_size": spec["expect"]["metadata_input_size"],
                               "class_names": spec["expect"]["class_names"],
                               "mean": spec["expect"]["mean"], "std": spec["expect"]["std"]}},
                   path)
    elif v == "state_dict_key":
        torch.save({"state_dict": sd, "epoch": 7, "arch": arch}, path)
    elif v == "model_key_model_name":
        torch.save({"model": sd, "config": {"model_name": arch, "num_classes": nc}}, path)
    elif v == "net_key_module_prefix":
        # pytorch-cifar style: DataParallel-wrapped net saved under "net".
        dp = nn.DataParallel(model)
        torch.save({"net": dp.state_dict(), "acc": 93.1, "epoch": 199}, path)
    elif v == "dataparallel":
        torch.save(nn.DataParallel(model).state_dict(), path)
    elif v == "safetensors":
        write_safetensors(path, sd, metadata={"format": "pt"})
    elif v == "safetensors_f16":
        half = collections.OrderedDict(
            (k, t.half() if t.is_floating_point() else t) for k, t in sd.items())
        write_safetensors(path, half, metadata={"format": "pt"})
        model.load_state_dict({k: t.float() if t.is_floating_point() else t
                               for k, t in half.items()})
    elif v == "tied_storage":
        # (1) every float tensor is a view into one flat storage (non-zero storage offsets, one
        # storage shared by ~100 tensors), (2) two BN weights are the same tensor (one key).
        floats = [k for k, t in sd.items() if t.is_floating_point()]
        flat = torch.cat([sd[k].reshape(-1) for k in floats])
        out, off = collections.OrderedDict(), 0
        for k, t in sd.items():
            if k in floats:
                out[k] = flat[off:off + t.numel()].view(t.shape)
                off += t.numel()
            else:
                out[k] = t
        out["layer1.0.bn2.weight"] = out["layer1.0.bn1.weight"]
        torch.save(out, path)
        model.load_state_dict(out)
    elif v == "strided":
        out = collections.OrderedDict(sd)
        out["fc.weight"] = sd["fc.weight"].t().contiguous().t()
        out["conv1.weight"] = sd["conv1.weight"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        out["bn1.bias"] = torch.cat([torch.randn(100), sd["bn1.bias"], torch.randn(3)])[100:-3]
        out["layer4.1.conv2.weight"] = sd["layer4.1.conv2.weight"].transpose(2, 3).contiguous().transpose(2, 3)
        torch.save(out, path)
        back = torch.load(path)
        assert not back["fc.weight"].is_contiguous() and back["bn1.bias"].storage_offset() == 100
    elif v == "protocol4":
        torch.save(sd, path, pickle_protocol=4)
    elif v in ("f16", "bf16"):
        dt = torch.float16 if v == "f16" else torch.bfloat16
        low = collections.OrderedDict(
            (k, t.to(dt) if t.is_floating_point() else t) for k, t in sd.items())
        torch.save(low, path)
        model.load_state_dict({k: t.float() if t.is_floating_point() else t
                               for k, t in low.items()})
    elif v == "archive_prefix":
        tmp = out_dir / "plain.pth"
        torch.save(sd, tmp)
        rewrite_zip(tmp, path, prefix="archive")
        tmp.unlink()
        back = torch.load(path)
        assert all(torch.equal(back[k], sd[k]) for k in sd)
    elif v == "big_endian":
        tmp = out_dir / "plain.pth"
        torch.save(sd, tmp)
        rewrite_zip(tmp, path, big_endian=True)
        tmp.unlink()
    else:
        raise ValueError(f"unknown variant {v}")
    return model


def generate_case(spec, root):
    """Builds one case folder (atomically). Returns (name, seconds)."""
    import torch
    torch.set_num_threads(1)
    t0 = time.time()
    final = case_dir(spec["name"], root)
    if final.is_dir():
        return spec["name"], 0.0
    tmp = root / f".{spec['name']}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seed = _seed_of(spec["name"])
    torch.manual_seed(seed)
    if spec["kind"] == "zoo":
        model = build_model(spec["arch"], spec["num_classes"], seed)
        torch.save(model.state_dict(), tmp / spec["checkpoint"])
    else:
        model = _make_variant(spec, seed, tmp)
    model.eval()
    runs = _forward_runs(model, spec, seed, tmp)
    f64_error, eps_sensitivity = _probes(model, seed)
    if f64_error > MAX_FLOAT64_ERROR:
        raise RuntimeError(f"{spec['name']}: float32 vs float64 logits differ by {f64_error:.2e} "
                           f"relative (> {MAX_FLOAT64_ERROR:g}): fixture too ill-conditioned")
    meta = dict(spec)
    meta.update(
        float64_error=f64_error,
        eps_sensitivity=eps_sensitivity,
        runs=runs,
        checkpoint_sha256=hashlib.sha256((tmp / spec["checkpoint"]).read_bytes()).hexdigest(),
        checkpoint_bytes=(tmp / spec["checkpoint"]).stat().st_size,
        max_abs_logit=max(r["max_abs_logit"] for r in runs.values()),
        torch_version=torch.__version__,
        seconds=round(time.time() - t0, 2))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    os.replace(tmp, final)
    return spec["name"], time.time() - t0


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(names=None, jobs=2, log=None):
    """Generates whichever requested cases are missing; returns the fixture root."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = fixture_root()
    specs = [s for s in all_specs() if names is None or s["name"] in names]
    if names is not None:
        unknown = set(names) - {s["name"] for s in specs}
        if unknown:
            raise ValueError(f"unknown fixture cases: {sorted(unknown)}")
    with _locked(root.parent / ".lock"):
        # Old keys are stale by construction (another generator or torch): reclaim the disk.
        if root.parent.is_dir():
            for other in root.parent.iterdir():
                if other.is_dir() and other.name != root.name:
                    shutil.rmtree(other, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        todo = [s for s in specs if not case_dir(s["name"], root).is_dir()]
        if not todo:
            return root
        # Big models first so that the two workers finish together.
        weight = {"efficientnet_b7": 9, "efficientnet_b6": 7, "resnet152": 7, "efficientnet_b5": 6,
                  "resnet101": 5, "wide_resnet50_2": 5, "efficientnet_b4": 4}
        todo.sort(key=lambda s: -weight.get(s["arch"], 1))
        log(f"generating {len(todo)} oracle fixtures with PyTorch into {root} ({jobs} workers)")
        t0 = time.time()
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(generate_case, s, root): s["name"] for s in todo}
            for fut in concurrent.futures.as_completed(futures):
                name, seconds = fut.result()
                log(f"  {name}: {seconds:.1f} s")
        log(f"generated {len(todo)} fixtures in {time.time() - t0:.0f} s")
    return root


def main():
    ap = argparse.ArgumentParser(description="Generate (or list) the cached oracle fixtures.")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--list", action="store_true", help="list cases and whether they are cached")
    ap.add_argument("--force", action="store_true", help="regenerate the requested cases")
    args = ap.parse_args()
    if args.list:
        root = fixture_root()
        print(root)
        for s in all_specs():
            d = case_dir(s["name"], root)
            state = "cached" if d.is_dir() else "missing"
            extra = ""
            if d.is_dir():
                m = load_meta(s["name"], root)
                eps = m["eps_sensitivity"]
                extra = (f" max|logit| {m['max_abs_logit']:.3g}, f64 error {m['float64_error']:.1e},"
                         f" eps sensitivity {'-' if eps is None else f'{eps:.1e}'},"
                         f" {m['checkpoint_bytes'] / 1e6:.1f} MB, {m['seconds']} s")
            print(f"  {s['name']:40s} {state}{extra}")
        return
    if args.force:
        for s in all_specs():
            if args.only is None or s["name"] in args.only:
                shutil.rmtree(case_dir(s["name"]), ignore_errors=True)
    t0 = time.time()
    root = ensure(args.only, jobs=args.jobs)
    print(f"{root} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

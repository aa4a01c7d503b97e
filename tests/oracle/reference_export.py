#!/usr/bin/python3
"""A slow Python stand-in for `modex export`, built on torch.onnx.export, for checking the oracle
tests themselves: with MODEX_BIN pointing here, every oracle test must pass (this proves the
fixtures, the ORT runner and the comparisons are right before blaming the C++ side).

    MODEX_BIN=tests/oracle/reference_export.py /usr/bin/python3 -m pytest -q tests/oracle

It follows the CLI contract (flags, outputs, metadata, sidecar, --json, exit codes 0/1/2, error
messages starting `error:`, nothing left behind on failure) for the checkpoint forms the tests
use. It is not part of modex and is never shipped.
"""
import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ZOO = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + \
      [f"efficientnet_b{i}" for i in range(8)] + \
      ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnext50_32x4d",
       "wide_resnet50_2"]
CLASSIFIER = {"resnet": "fc", "resnext": "fc", "wide_resnet": "fc", "efficientnet": "classifier.1",
              "mobilenet_v2": "classifier.1", "mobilenet_v3": "classifier.3"}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class UserError(Exception):
    pass


def classifier_of(arch):
    for prefix, name in CLASSIFIER.items():
        if arch.startswith(prefix):
            return name
    raise KeyError(arch)


# ---------------------------------------------------------------------------------------------
# Reading.

def read_safetensors(path):
    import numpy as np
    import torch
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise UserError(f"{path}: too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise UserError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + n])
    buf = data[8 + n:]
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    out = collections.OrderedDict()
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = buf[b:end]
        if e["dtype"] == "BF16":
            t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=dtypes[e["dtype"]]).copy())
        out[name] = t.reshape(e["shape"])
    return out


def load_checkpoint(path):
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.stat().st_size == 0:
        raise UserError(f"{path}: empty file, expected a PyTorch checkpoint or safetensors file")
    head = p.read_bytes()[:8]
    if not head.startswith(b"PK"):
        if int.from_bytes(head, "little") < p.stat().st_size:
            try:
                return read_safetensors(path)
            except UserError:
                raise
            except Exception as e:
                raise UserError(f"{path}: bad safetensors file: {e}")
        raise UserError(f"{path}: not a zip checkpoint (legacy pre-1.6 files are not supported)")
    try:
        with zipfile.ZipFile(path) as z:
            return _load_zip(z)
    except zipfile.BadZipFile as e:
        raise UserError(f"{path}: corrupt zip archive: {e}")
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused to unpickle data.pkl: {e}")
    except UserError as e:
        raise UserError(f"{path}: {e}")
    except Exception as e:
        raise UserError(f"{path}: cannot read checkpoint: {type(e).__name__}: {e}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a weights-only checkpoint needs (like weights_only=True, which
    in torch 1.13 cannot read protocol 4)."""
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch", "Size"), ("torch", "device"),
               ("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset")}

    def find_class(self, module, name):
        import torch
        if (module, name) in self.ALLOWED or (module == "torch" and name.endswith("Storage")) \
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}: not a tensor or container "
                                     "(nothing was executed)")


def _load_zip(z):
    """torch.load's zip reading with a restricted unpickler. Not torch.load(pickle_module=...):
    Debian's torch 1.13 silently replaces pickle_module with pickle unless weights_only=True,
    and its weights_only unpickler cannot read protocol 4."""
    import torch
    names = z.namelist()
    prefix = names[0].split("/", 1)[0]
    order = f"{prefix}/byteorder"
    swap = order in names and z.read(order).strip() == b"big"

    class U(_RestrictedUnpickler):
        def persistent_load(self, pid):
            _, storage_type, key, _, numel = pid
            dtype = storage_type.dtype
            try:
                raw = bytearray(z.read(f"{prefix}/data/{key}"))
            except KeyError:
                raise UserError(f"storage {key} is missing from the zip")
            size = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * size:
                raise UserError(f"storage {key} has {len(raw)} bytes, needs {numel * size}")
            if swap and size > 1:
                src = bytes(raw)
                for i in range(size):
                    raw[i::size] = src[size - 1 - i::size]
            if not raw:
                return torch.empty(0, dtype=dtype).storage()
            return torch.frombuffer(raw, dtype=dtype).storage()

    return U(io.BytesIO(z.read(f"{prefix}/data.pkl"))).load()


def unwrap(obj):
    """Returns (state_dict, config)."""
    import torch
    config = {}
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        config = obj.get("config") or {}
        for key in ("model_state_dict", "state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise UserError("no state dict found (looked for model_state_dict, state_dict, model, net)")
    sd = collections.OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    for prefix in ("module.",):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = collections.OrderedDict((k[len(prefix):], v) for k, v in sd.items())
    return sd, config


# ---------------------------------------------------------------------------------------------
# Architecture detection.

def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def _reference_shapes(arch, nc):
    import torchvision
    return _shapes(getattr(torchvision.models, arch)(num_classes=nc).state_dict())


def _num_classes(sd, arch):
    w = sd.get(classifier_of(arch) + ".weight")
    return int(w.shape[0]) if w is not None and w.dim() == 2 else 1000


def _report(sd, candidates):
    best, best_score = None, None
    have = _shapes(sd)
    for arch in candidates:
        ref = _reference_shapes(arch, _num_classes(sd, arch))
        score = len(set(ref) ^ set(have)) + sum(ref[k] != have[k] for k in set(ref) & set(have))
        if best_score is None or score < best_score:
            best, best_score = (arch, ref), score
    arch, ref = best
    missing = sorted(set(ref) - set(have))
    unexpected = sorted(set(have) - set(ref))
    mismatched = [f"{k}: checkpoint has {list(have[k])}, {arch} expects {list(ref[k])}"
                  for k in ref if k in have and ref[k] != have[k]]
    parts = [f"checkpoint matches no known architecture; closest is {arch}"]
    if mismatched:
        parts.append("shape mismatches: " + "; ".join(mismatched[:10]))
    if missing:
        parts.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:10]))
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:10]))
    return ". ".join(parts)


def build(sd, arch_override=None, nc_override=None):
    """Returns (nn.Module, arch, num_classes, wrapper)."""
    import torchvision
    from torch import nn
    have = _shapes(sd)
    candidates = [arch_override] if arch_override else ZOO
    # Plain torchvision naming.
    for arch in candidates:
        nc = _num_classes(sd, arch)
        if _reference_shapes(arch, nc) == have:
            if nc_override and nc_override != nc:
                raise UserError(f"--num-classes {nc_override} but the checkpoint's classifier has {nc}")
            m = getattr(torchvision.models, arch)(num_classes=nc)
            m.load_state_dict(sd)
            return m, arch, nc, None
    # A complete model under `backbone.`, or a backbone with its own linear head.
    if any(k.startswith("backbone.") for k in sd):
        inner = collections.OrderedDict((k[9:], v) for k, v in sd.items() if k.startswith("backbone."))
        rest = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
        if not rest:
            m, arch, nc, _ = build(inner, arch_override, nc_override)
            return _Prefixed(m), arch, nc, None
        head = next((h for h in ("head", "fc", "classifier.1", "classifier") if
                     set(rest) == {f"{h}.weight", f"{h}.bias"}), None)
        if head:
            nc = int(rest[f"{head}.weight"].shape[0])
            lin = nn.Linear(rest[f"{head}.weight"].shape[1], nc)
            lin.load_state_dict({"weight": rest[f"{head}.weight"], "bias": rest[f"{head}.bias"]})
            wrapper = {"backbone_prefix": "backbone.", "head": head}
            for arch in candidates:
                full = getattr(torchvision.models, arch)()
                feats = collections.OrderedDict((k, v) for k, v in full.state_dict().items()
                                                if not k.startswith(classifier_of(arch).split(".")[0]))
                if _shapes(feats) == _shapes(inner):  # the whole model minus its classifier
                    body = full
                    setattr(body, classifier_of(arch).split(".")[0], nn.Identity())
                    body.load_state_dict(inner)
                    return nn.Sequential(body, lin), arch, nc, wrapper
                if hasattr(full, "features") and _shapes(full.features.state_dict()) == _shapes(inner):
                    full.features.load_state_dict(inner)
                    body = nn.Sequential(full.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
                    return nn.Sequential(body, lin), arch, nc, wrapper
    raise UserError(_report(sd, candidates))


def _Prefixed(m):
    from torch import nn
    return nn.Sequential(m)


# ---------------------------------------------------------------------------------------------

def export(args):
    import onnx
    import torch
    t0 = time.time()
    ckpt = Path(args.checkpoint)
    obj = load_checkpoint(ckpt)
    sd, config = unwrap(obj)
    sd = collections.OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items())
    model, arch, nc, wrapper = build(sd, args.arch or None, args.num_classes)
    model.eval()
    size = args.input_size or int(config.get("input_size", 224))
    class_names = list(config.get("class_names") or [])
    mean = config.get("mean", IMAGENET_MEAN)
    std = config.get("std", IMAGENET_STD)
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: output directory does not exist")
    stem = args.name or ckpt.stem
    onnx_path, json_path = out_dir / f"{stem}.onnx", out_dir / f"{stem}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".onnx.tmp", dir=out_dir) \
        if os.access(out_dir, os.W_OK) else (None, None)
    if tmp is None:
        raise UserError(f"{out_dir}: output directory is not writable")
    os.close(fd)
    try:
        x = torch.zeros(1, 3, size, size)
        dyn = None if args.static else {"image": {0: "batch", 2: "height", 3: "width"},
                                         "logits": {0: "batch"}}
        torch.onnx.export(model, x, tmp, input_names=["image"], output_names=["logits"],
                          opset_version=args.opset, dynamic_axes=dyn, do_constant_folding=True)
        m = onnx.load(tmp)
        meta = {
            "architecture": arch, "num_classes": str(nc), "class_names": json.dumps(class_names),
            "preprocessing": json.dumps({"input_size": size, "mean": mean, "std": std,
                                         "layout": "NCHW"}),
            "source_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
            "modex_version": "reference",
        }
        for k, v in meta.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(m, tmp)
        os.replace(tmp, onnx_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    result = {"architecture": arch, "num_classes": nc, "input_size": size, "wrapper": wrapper,
              "outputs": [{"format": "onnx", "path": str(onnx_path),
                           "bytes": onnx_path.stat().st_size}],
              "sidecar": str(json_path), "seconds": round(time.time() - t0, 3)}
    json_path.write_text(json.dumps(dict(result, class_names=class_names,
                                         preprocessing=json.loads(meta["preprocessing"]),
                                         source_sha256=meta["source_sha256"]), indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {onnx_path}")


def main():
    ap = argparse.ArgumentParser(prog="modex")
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--format", required=True, choices=["onnx"])
    e.add_argument("--output-dir", required=True)
    e.add_argument("--arch")
    e.add_argument("--num-classes", type=int)
    e.add_argument("--input-size", type=int)
    e.add_argument("--opset", type=int, default=11, choices=range(11, 18))
    e.add_argument("--static", action="store_true")
    e.add_argument("--name")
    e.add_argument("--json", action="store_true")
    args = ap.parse_args()  # exits 2 on usage errors, like the contract
    try:
        export(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

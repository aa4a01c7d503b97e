#!/usr/bin/python3
"""Writes real torch.save checkpoints (and a few hostile or malformed ones) for the io tests.

Run with Debian's interpreter, which has torch 1.13:  /usr/bin/python3 make_fixtures.py OUT_DIR

For every case OUT_DIR gets the file itself and <case>.json describing what modex must make of
it, computed by torch: either the tensors (names after prefix stripping, dtypes, shapes, and all
values flattened in C order; floating-point values as unsigned bit patterns so the comparison is
exact, including NaN payloads) plus format/config details, or the error kind and message parts.
OUT_DIR/manifest.json lists the cases.
"""

import argparse
import collections
import copy
import io
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile

import numpy as np
import torch
import torch.nn as nn

DTYPE_NAMES = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
    torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32", torch.int16: "int16",
    torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool",
}
# Unsigned bit patterns of floating-point values, for exact comparison.
FLOAT_BITS = {torch.float32: (torch.int32, 32), torch.float64: (torch.int64, 64),
              torch.float16: (torch.int16, 16), torch.bfloat16: (torch.int16, 16)}
STORAGE_ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
                    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
                    "ByteStorage": 1, "BoolStorage": 1}

OUT = None
CASES = []


def expected_tensor(name, t):
    t = t.detach().contiguous()
    flat = t.reshape(-1)
    if t.dtype in FLOAT_BITS:
        int_dtype, bits = FLOAT_BITS[t.dtype]
        values = [v & ((1 << bits) - 1) for v in flat.view(int_dtype).tolist()]
        encoding = "bits"
    else:
        values = [int(v) for v in flat.tolist()]
        encoding = "int"
    return {"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
            "encoding": encoding, "values": values}


def expected_numpy(name, a):
    return {"name": name, "dtype": str(a.dtype), "shape": list(a.shape), "encoding": "int",
            "values": [int(v) for v in a.reshape(-1).tolist()]}


def add_ok(case, filename, tensors, fmt="pytorch-zip", key="", stripped=(), config=None):
    """tensors: in expected order, (expected name, torch tensor) pairs or ready expected dicts."""
    spec = {"name": case, "file": filename, "expect": "ok", "format": fmt, "state_dict_key": key,
            "stripped_prefixes": list(stripped), "config": config or {},
            "tensors": [t if isinstance(t, dict) else expected_tensor(*t) for t in tensors]}
    write_spec(case, spec)


def add_error(case, filename, kind, contains, marker=None, hint_contains=None):
    spec = {"name": case, "file": filename, "expect": "error", "error_kind": kind,
            "message_contains": contains}
    if marker:
        spec["marker"] = marker
    if hint_contains:
        spec["hint_contains"] = hint_contains
    write_spec(case, spec)


def write_spec(case, spec):
    with open(os.path.join(OUT, case + ".json"), "w") as f:
        json.dump(spec, f)
    CASES.append(case)


def path(name):
    return os.path.join(OUT, name)


def tiny_net():
    torch.manual_seed(0)
    net = nn.Sequential(collections.OrderedDict([
        ("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("relu", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(4, 5))]))
    net.train()
    net(torch.randn(2, 3, 8, 8))  # running stats and num_batches_tracked become non-trivial
    net.eval()
    return net


def sd_items(sd, prefix=""):
    return [(k[len(prefix):], v) for k, v in sd.items()]


# ----------------------------------------------------------------------------------------------
# zip rewriting (big-endian variants, damaged archives)

def storage_itemsizes(pkl):
    """Storage key -> element size, by unpickling data.pkl without building tensors."""
    sizes = {}

    class Scan(pickle.Unpickler):
        def find_class(self, module, name):
            if name.endswith("Storage"):
                return name
            if module.startswith("torch"):
                return lambda *args, **kwargs: None
            return super().find_class(module, name)

        def persistent_load(self, pid):
            sizes[pid[2]] = STORAGE_ITEMSIZE[pid[1]]
            return None

    Scan(io.BytesIO(pkl)).load()
    return sizes


def rewrite_zip(src, dst, transform, extra=(), compression=zipfile.ZIP_STORED):
    """Copies src to dst entry by entry (same names and order); transform(name, data) -> data or
    None to drop the entry. extra: (name, data) pairs appended."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = transform(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in extra:
            zout.writestr(name, data)


def with_byteorder(src, dst, order):
    with zipfile.ZipFile(src) as z:
        prefix = z.namelist()[0].split("/")[0] + "/"
        sizes = storage_itemsizes(z.read(prefix + "data.pkl"))
        has_byteorder = prefix + "byteorder" in z.namelist()

    def transform(name, data):
        if name == prefix + "byteorder":
            return order.encode()
        if order == "big" and name.startswith(prefix + "data/"):
            size = sizes[name[len(prefix) + 5:]]
            if size > 1:
                return np.frombuffer(data, dtype="u%d" % size).byteswap().tobytes()
        return data

    rewrite_zip(src, dst, transform, [] if has_byteorder else [(prefix + "byteorder", order.encode())])


# ----------------------------------------------------------------------------------------------
# safetensors, written by hand (the safetensors package is not available here)

ST_CODES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
            torch.uint8: "U8", torch.bool: "BOOL"}
NP_CODES = {np.dtype("uint16"): "U16", np.dtype("uint32"): "U32", np.dtype("uint64"): "U64"}


def save_safetensors(filename, tensors, metadata=None, align=True):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs, offset = [], 0
    for name, t in tensors:
        if isinstance(t, np.ndarray):
            code, shape, data = NP_CODES[t.dtype], list(t.shape), np.ascontiguousarray(t).tobytes()
        else:
            t = t.detach().contiguous()
            code, shape = ST_CODES[t.dtype], list(t.shape)
            data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    if align:
        text += b" " * (-len(text) % 8)
    elif (8 + len(text)) % 8 == 0:
        text += b" "  # force misaligned data
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ----------------------------------------------------------------------------------------------
# hostile objects

class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


class RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, ("__import__('os').system('touch %s')" % self.marker,))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


def check_really_malicious(filename, marker):
    """The fixture is only meaningful if an unrestricted loader really runs its code."""
    if os.path.exists(marker):
        os.remove(marker)
    torch.load(filename)
    assert os.path.exists(marker), "fixture %s did not run its payload under torch.load" % filename
    os.remove(marker)


# ----------------------------------------------------------------------------------------------

def main():
    global OUT
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    OUT = os.path.abspath(parser.parse_args().out_dir)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    net = tiny_net()
    # A snapshot: state_dict() returns the live parameters, which the optimizer step below changes.
    # deepcopy keeps the OrderedDict's _metadata attribute, which torch.save writes with BUILD.
    sd = copy.deepcopy(net.state_dict())
    assert hasattr(sd, "_metadata")

    # Plain state dict.
    torch.save(sd, path("plain_state_dict.pt"))
    add_ok("plain_state_dict", "plain_state_dict.pt", sd_items(sd))

    # Training checkpoint: weights next to optimizer state (which has tensors of its own).
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    net.eval()
    sd2 = {k: v.clone() for k, v in net.state_dict().items()}
    config = {"architecture": "tinynet", "num_classes": 5, "input_size": [3, 32, 32],
              "class_names": ["cat", "dog", "eel", "fox", "gnu"]}
    torch.save({"epoch": 3, "model_state_dict": collections.OrderedDict(sd2),
                "optimizer_state_dict": opt.state_dict(), "best_acc": 0.91, "config": config},
               path("training_checkpoint.pt"))
    add_ok("training_checkpoint", "training_checkpoint.pt", sd_items(sd2), key="model_state_dict",
           config={"architecture": "tinynet", "num_classes": 5, "input_size": 32,
                   "class_names": config["class_names"]})

    # DataParallel prefix, and torch.compile around DDP (emulated: torch 1.13 has no compile).
    dp_sd = nn.DataParallel(net).state_dict()
    assert all(k.startswith("module.") for k in dp_sd)
    torch.save(dp_sd, path("data_parallel.pt"))
    add_ok("data_parallel", "data_parallel.pt", sd_items(dp_sd, "module."), stripped=["module."])
    compiled = collections.OrderedDict(("_orig_mod." + k, v) for k, v in dp_sd.items())
    torch.save(compiled, path("compiled_data_parallel.pt"))
    add_ok("compiled_data_parallel", "compiled_data_parallel.pt", sd_items(dp_sd, "module."),
           stripped=["_orig_mod.", "module."])
    # Only some keys prefixed: nothing is stripped.
    partial = collections.OrderedDict([("module.a", torch.ones(2)), ("b", torch.zeros(1))])
    torch.save(partial, path("partial_prefix.pt"))
    add_ok("partial_prefix", "partial_prefix.pt", list(partial.items()))

    # Newer pickle protocols.
    for proto in (4, 5):
        torch.save(sd, path("protocol%d.pt" % proto), pickle_protocol=proto)
        add_ok("protocol%d" % proto, "protocol%d.pt" % proto, sd_items(sd))

    # Tied weights: two keys share one tensor, a third views the same storage at an offset.
    torch.manual_seed(1)
    w = torch.randn(4, 3)
    tied = collections.OrderedDict([("embed.weight", w), ("head.weight", w), ("tail", w[1:]),
                                    ("other", torch.arange(5, dtype=torch.int64))])
    torch.save(tied, path("tied.pt"))
    add_ok("tied", "tied.pt", list(tied.items()))

    # Views: non-zero offsets, non-contiguous strides, zero strides, empty and 0-dim tensors.
    torch.manual_seed(2)
    big = torch.randn(6, 5)
    x4 = torch.randn(2, 3, 4, 5)
    strided = collections.OrderedDict([
        ("transposed", big.t()),
        ("rows", big[2:5]),
        ("column", big[:, 1]),
        ("stepped", big[::2, ::3]),
        ("permuted", x4.permute(0, 2, 3, 1)),
        ("expanded", torch.arange(3.0).expand(2, 3)),
        ("f16_transposed", big.half().t()),
        ("i64_column", torch.arange(24, dtype=torch.int64).reshape(4, 6)[:, 4]),
        ("i8_stepped", torch.arange(-10, 10, dtype=torch.int8)[1::3]),
        ("empty", torch.empty(0, 3)),
        ("empty_view", big[5:5]),
        ("scalar", torch.tensor(2.5)),
        ("int_scalar", torch.tensor(7)),
        ("element_view", big[3, 2]),
    ])
    assert not strided["transposed"].is_contiguous() and strided["rows"].storage_offset() > 0
    torch.save(strided, path("strided.pt"))
    add_ok("strided", "strided.pt", list(strided.items()))

    # Every storage dtype, with awkward values.
    special = [0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"), 1e-40, 3.4e38, 1e-8]
    dtypes = collections.OrderedDict([
        ("f32", torch.tensor(special, dtype=torch.float32)),
        ("f64", torch.tensor(special + [1e-310, 1.7e308], dtype=torch.float64)),
        ("f16", torch.tensor(special + [65504.0, 6e-8], dtype=torch.float16)),
        ("bf16", torch.tensor(special + [1e38], dtype=torch.bfloat16)),
        ("i64", torch.tensor([0, -1, 2**63 - 1, -2**63, 123456789012], dtype=torch.int64)),
        ("i32", torch.tensor([0, -1, 2**31 - 1, -2**31], dtype=torch.int32)),
        ("i16", torch.tensor([0, -1, 32767, -32768], dtype=torch.int16)),
        ("i8", torch.tensor([0, -1, 127, -128], dtype=torch.int8)),
        ("u8", torch.tensor([0, 1, 128, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True], dtype=torch.bool)),
        ("f32_matrix", torch.randn(3, 4)),
    ])
    torch.save(dtypes, path("dtypes.pt"))
    add_ok("dtypes", "dtypes.pt", list(dtypes.items()))

    # Byte order: explicit little, and big (storages byte-swapped), over every dtype and layout.
    mixed = collections.OrderedDict(list(dtypes.items()) + list(strided.items()) +
                                    [("tied_a", w), ("tied_b", w), ("tied_tail", w[1:])])
    torch.save(mixed, path("mixed_native.pt"))
    with_byteorder(path("mixed_native.pt"), path("byteorder_little.pt"), "little")
    add_ok("byteorder_little", "byteorder_little.pt", list(mixed.items()))
    with_byteorder(path("mixed_native.pt"), path("big_endian.pt"), "big")
    add_ok("big_endian", "big_endian.pt", list(mixed.items()))
    # torch 1.13 predates the byteorder record, so check the rewrite independently: swapping
    # each storage back must give the original bytes.
    with zipfile.ZipFile(path("big_endian.pt")) as big_zip, zipfile.ZipFile(path("byteorder_little.pt")) as little:
        prefix = little.namelist()[0].split("/")[0] + "/"
        sizes = storage_itemsizes(little.read(prefix + "data.pkl"))
        assert big_zip.read(prefix + "byteorder") == b"big"
        for key, size in sizes.items():
            data = big_zip.read(prefix + "data/" + key)
            if size > 1:
                data = np.frombuffer(data, dtype="u%d" % size).byteswap().tobytes()
            assert data == little.read(prefix + "data/" + key), key
    os.remove(path("mixed_native.pt"))

    # Config at the top level next to the weights.
    torch.save({"arch": "resnet18", "state_dict": sd, "num_classes": 5, "input_size": 224,
                "classes": ["a", "b", "c", "d", "e"], "epoch": 90}, path("arch_state_dict.pt"))
    add_ok("arch_state_dict", "arch_state_dict.pt", sd_items(sd), key="state_dict",
           config={"architecture": "resnet18", "num_classes": 5, "input_size": 224,
                   "class_names": ["a", "b", "c", "d", "e"]})

    # Other conventional keys.
    torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": 5,
                "config": {"model_name": "tinynet_v2", "input_size": 64}}, path("model_key.pt"))
    add_ok("model_key", "model_key.pt", sd_items(sd), key="model",
           config={"architecture": "tinynet_v2", "input_size": 64})
    torch.save({"net": {"state_dict": sd}, "step": 10}, path("nested_key.pt"))
    add_ok("nested_key", "nested_key.pt", sd_items(sd), key="net.state_dict")
    ema = collections.OrderedDict([("w", torch.ones(2, 2)), ("b", torch.zeros(2))])
    torch.save({"ema": ema, "step": 10, "note": "exponential moving average"}, path("all_tensor_dict.pt"))
    add_ok("all_tensor_dict", "all_tensor_dict.pt", list(ema.items()), key="ema")

    # Other harmless Python values around the weights: Parameters, bytes, sets, devices, dtypes,
    # sizes, slices, complex, big ints, argparse arguments and numpy values.
    param = nn.Parameter(torch.tensor([1.5, -2.0]))
    misc = {
        "state_dict": collections.OrderedDict([("w", param), ("b", torch.tensor([3], dtype=torch.int32))]),
        "meta": {"bytes": b"\x00\xffxyz", "set": {1, 2}, "frozenset": frozenset([3]),
                 "bytearray": bytearray(b"q"), "device": torch.device("cpu"), "dtype": torch.float16,
                 "size": torch.Size([2, 3]), "slice": slice(1, 2), "complex": complex(1, 2),
                 "big": 2 ** 70, "neg_big": -2 ** 70, "neg": -5, "float": 1.5, "none": None,
                 "tuple": (1, "a", (True, False)), "unicode": "ümlaut ✓ 𝄞", "long_list": list(range(300))},
        "args": argparse.Namespace(model="resnet18", lr=0.1),
        "best": np.float64(0.93),
        "array": np.arange(3),
    }
    for proto in (2, 4):
        name = "misc_values_p%d" % proto
        torch.save(misc, path(name + ".pt"), pickle_protocol=proto)
        add_ok(name, name + ".pt", list(misc["state_dict"].items()), key="state_dict")

    # Saved to a buffer, the folder is "archive/"; saved to a file, it is the file's stem.
    buf = io.BytesIO()
    torch.save(sd, buf)
    with open(path("bytesio_archive.pt"), "wb") as f:
        f.write(buf.getvalue())
    with zipfile.ZipFile(path("bytesio_archive.pt")) as z:
        assert z.namelist()[0].startswith("archive/")
    add_ok("bytesio_archive", "bytesio_archive.pt", sd_items(sd))
    torch.save(sd, path("checkpoint.epoch-7.pth"))
    add_ok("odd_stem", "checkpoint.epoch-7.pth", sd_items(sd))

    # Hostile pickles: an unrestricted loader would run a shell command.
    marker = path("PWNED_os_system")
    torch.save({"state_dict": sd, "payload": RunsShell(marker)}, path("malicious_os_system.pt"))
    check_really_malicious(path("malicious_os_system.pt"), marker)
    add_error("malicious_os_system", "malicious_os_system.pt", "unsafe",
              ["refusing to load", "'posix.system'", "data.pkl"], marker=marker)
    marker = path("PWNED_eval")
    torch.save(collections.OrderedDict([("w", torch.ones(1)), ("x", RunsEval(marker))]),
               path("malicious_eval.pt"))
    check_really_malicious(path("malicious_eval.pt"), marker)
    add_error("malicious_eval", "malicious_eval.pt", "unsafe", ["'builtins.eval'"], marker=marker)
    marker = path("PWNED_protocol4")
    torch.save({"model_state_dict": sd, "extra": [1, {"deep": RunsShell(marker)}]},
               path("malicious_protocol4.pt"), pickle_protocol=4)
    check_really_malicious(path("malicious_protocol4.pt"), marker)
    add_error("malicious_protocol4", "malicious_protocol4.pt", "unsafe", ["'posix.system'"], marker=marker)

    # Whole pickled modules.
    torch.save(TinyNet(), path("whole_module.pt"))
    add_error("whole_module", "whole_module.pt", "unsafe", ["'__main__.TinyNet'"],
              hint_contains="model.state_dict()")
    torch.save({"epoch": 1, "model": net}, path("whole_sequential.pt"))
    add_error("whole_sequential", "whole_sequential.pt", "unsafe",
              ["torch.nn.modules.container.Sequential"], hint_contains="model.state_dict()")

    # Formats modex does not read.
    torch.save(sd, path("legacy.pt"), _use_new_zipfile_serialization=False)
    add_error("legacy", "legacy.pt", "unsupported", ["legacy (pre-1.6)", "torch >= 1.6"])
    torch.jit.script(net).save(path("torchscript.pt"))
    add_error("torchscript", "torchscript.pt", "unsupported", ["TorchScript"], hint_contains="state_dict()")
    torch.save(torch.ones(3), path("bare_tensor.pt"))
    add_error("bare_tensor", "bare_tensor.pt", "unsupported", ["tensor", "not a dict of weights"])
    torch.save({"epoch": 1, "lr": 0.1}, path("no_tensors.pt"))
    add_error("no_tensors", "no_tensors.pt", "invalid", ["no tensors found"])

    # Re-zipped with compression (torch never compresses, zip tools might).
    rewrite_zip(path("plain_state_dict.pt"), path("deflated.pt"), lambda n, d: d, compression=zipfile.ZIP_DEFLATED)
    add_ok("deflated", "deflated.pt", sd_items(sd))

    # Damaged archives.
    with zipfile.ZipFile(path("plain_state_dict.pt")) as z:
        prefix = z.namelist()[0].split("/")[0] + "/"
    rewrite_zip(path("plain_state_dict.pt"), path("short_storage.pt"),
                lambda n, d: d[:-4] if n == prefix + "data/0" else d)
    add_error("short_storage", "short_storage.pt", "invalid", ["storage '0'", "data/0", "holds"])
    rewrite_zip(path("plain_state_dict.pt"), path("missing_storage.pt"),
                lambda n, d: None if n == prefix + "data/1" else d)
    add_error("missing_storage", "missing_storage.pt", "invalid", ["storage '1' is missing"])
    rewrite_zip(path("plain_state_dict.pt"), path("no_data_pkl.pt"),
                lambda n, d: None if n == prefix + "data.pkl" else d)
    add_error("no_data_pkl", "no_data_pkl.pt", "invalid", ["data.pkl"])
    with_byteorder(path("plain_state_dict.pt"), path("bad_byteorder.pt"), "middle")
    add_error("bad_byteorder", "bad_byteorder.pt", "invalid", ["byteorder", "middle"])
    raw = bytearray(open(path("plain_state_dict.pt"), "rb").read())
    with zipfile.ZipFile(path("plain_state_dict.pt")) as z:
        info = z.getinfo(prefix + "data/0")
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x40  # data changes, CRC does not
    with open(path("crc_mismatch.pt"), "wb") as f:
        f.write(raw)
    add_error("crc_mismatch", "crc_mismatch.pt", "invalid", ["data/0", "CRC"])
    whole = open(path("plain_state_dict.pt"), "rb").read()
    with open(path("truncated.pt"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    add_error("truncated", "truncated.pt", "invalid", ["truncated zip archive"])
    open(path("empty.pt"), "wb").close()
    add_error("empty", "empty.pt", "invalid", ["empty"])

    # safetensors.
    torch.manual_seed(3)
    st_tensors = [("conv.weight", torch.randn(4, 3, 3, 3)), ("conv.bias", torch.randn(4))] + \
        [("dtype." + k, v) for k, v in dtypes.items()] + \
        [("u16", np.array([0, 1, 65535], dtype=np.uint16)),
         ("u32", np.array([0, 4294967295], dtype=np.uint32)),
         ("u64", np.array([0, 2**64 - 1], dtype=np.uint64)),
         ("scalar", torch.tensor(4.0)), ("empty", torch.empty(0, 2))]
    expected_st = [expected_numpy(n, t) if isinstance(t, np.ndarray) else expected_tensor(n, t)
                   for n, t in st_tensors]
    meta = {"architecture": "resnet18", "num_classes": "10", "input_size": "[3, 224, 224]",
            "class_names": json.dumps(["c%d" % i for i in range(10)]), "format": "pt"}
    save_safetensors(path("model.safetensors"), st_tensors, meta)
    add_ok("safetensors", "model.safetensors", expected_st, fmt="safetensors",
           config={"architecture": "resnet18", "num_classes": 10, "input_size": 224,
                   "class_names": ["c%d" % i for i in range(10)]})
    save_safetensors(path("unaligned.safetensors"), st_tensors, None, align=False)
    add_ok("safetensors_unaligned", "unaligned.safetensors", expected_st,
           fmt="safetensors")
    save_safetensors(path("ddp.safetensors"), [("module." + k, v) for k, v in sd.items()])
    add_ok("safetensors_ddp", "ddp.safetensors", sd_items(sd), fmt="safetensors", stripped=["module."])

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"cases": CASES, "torch_version": torch.__version__}, f, indent=1)
    print("wrote %d io fixtures to %s" % (len(CASES), OUT))


if __name__ == "__main__":
    main()

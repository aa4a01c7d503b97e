#!/usr/bin/python3
"""Writes the seed corpora in tests/fuzz/corpus/ (small, checked in; rerun only to refresh them).

Run with Debian's interpreter, which has torch 1.13:  /usr/bin/python3 tests/fuzz/make_corpus.py
"""

import collections
import io
import json
import os
import pickle
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def saved(obj, **kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def data_pkl(zip_bytes):
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])


def to_big_endian(zip_bytes):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/data/" in info.filename:  # every storage below is float32
                data = b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))
            zout.writestr(info.filename, data)
        zout.writestr("archive/byteorder", b"big")
    return out.getvalue()


def safetensors(tensors, metadata=None, pad=True):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (code, shape, data) in tensors.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


class Shell:
    def __reduce__(self):
        return (os.system, ("true",))


def main():
    tiny = collections.OrderedDict([("w", torch.arange(4.0).reshape(2, 2)),
                                    ("n", torch.tensor(3)), ("h", torch.ones(2, dtype=torch.float16))])
    base = torch.arange(6.0).reshape(2, 3)
    strided = collections.OrderedDict([("t", base.t()), ("row", base[1]), ("e", torch.empty(0))])
    training = {"model_state_dict": collections.OrderedDict([("module.fc.weight", torch.ones(1, 2))]),
                "epoch": 1, "config": {"arch": "x", "num_classes": 2, "input_size": [3, 8, 8],
                                       "class_names": ["a", "b"]}}

    ckpts = {
        "state_dict.pt": saved(tiny),
        "protocol4.pt": saved(tiny, pickle_protocol=4),
        "strided.pt": saved(strided),
        "training.pt": saved(training),
        "big_endian.pt": to_big_endian(saved(collections.OrderedDict([("w", base)]))),
        "malicious.pt": saved({"x": Shell()}),
    }
    for name, data in ckpts.items():
        write("fuzz_checkpoint", name, data)
    write("fuzz_checkpoint", "truncated.pt", ckpts["state_dict.pt"][:300])
    legacy = io.BytesIO()
    torch.save(torch.ones(1), legacy, _use_new_zipfile_serialization=False)
    write("fuzz_checkpoint", "legacy_head.pt", legacy.getvalue()[:64])
    st = safetensors({"a": ("F32", [2], struct.pack("<2f", 1, 2)), "b": ("I8", [1], b"\x07")},
                     {"architecture": "x", "num_classes": "2"})
    write("fuzz_checkpoint", "model.safetensors", st)

    for name in ("state_dict.pt", "protocol4.pt", "strided.pt", "training.pt", "malicious.pt"):
        write("fuzz_pickle", name.replace(".pt", ".pkl"), data_pkl(ckpts[name]))
    write("fuzz_pickle", "protocol5.pkl", data_pkl(saved(tiny, pickle_protocol=5)))
    write("fuzz_pickle", "protocol0.pkl",
          pickle.dumps({"a": [1, 2.5, "x\u00e9", None, True], "b": (b"\x00\xff", 2 ** 70)}, protocol=0))
    write("fuzz_pickle", "sets_bytes.pkl",
          pickle.dumps({"s": {1, 2}, "f": frozenset([3]), "b": b"xy", "ba": bytearray(b"z")}, protocol=2))

    write("fuzz_safetensors", "model.safetensors", st)
    write("fuzz_safetensors", "unaligned.safetensors",
          safetensors({"a": ("F64", [1], struct.pack("<d", 1)), "b": ("U8", [3], b"abc")}, pad=False))
    write("fuzz_safetensors", "empty_header.safetensors", safetensors({}))
    write("fuzz_safetensors", "zero_dim.safetensors",
          safetensors({"s": ("BF16", [], b"\x80\x3f"), "e": ("BOOL", [0, 2], b"")}))


if __name__ == "__main__":
    main()

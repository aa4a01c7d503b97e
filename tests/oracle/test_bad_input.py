"""Bad input to `modex export` (issue 2): every case must exit 1 with an `error: ` message on
stderr that says what is wrong, run nothing from the file, and leave nothing in the output dir.
Usage mistakes exit 2. The checkpoints are made here with real `torch.save` (cheap: no cache).

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_bad_input.py
"""
import collections
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402

import torch  # noqa: E402  (Debian's python3-torch: missing is an error, never a skip)
import torchvision  # noqa: E402
from torch import nn  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Payloads. Their __reduce__ runs only if a loader executes the pickle: the tests prove it didn't.

class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {self.marker}')",))


class LyingTensor:
    """Pickles as torch._utils._rebuild_tensor_v2 (an allowed global) on a real storage, with a
    size/offset/stride that does not fit in it: the loader must bounds-check, not read past."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce_ex__(self, protocol):
        storage, offset, size, stride = self.args
        return (torch._utils._rebuild_tensor_v2,
                (storage, offset, size, stride, False, collections.OrderedDict()))


def resnet18_state_dict():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


class TinyNet(nn.Module):
    """Not a zoo architecture, but shares some key names with resnet18."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc = nn.Linear(32, 10)


# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files():
    """Builds every bad checkpoint once (~0.6 GB of resnet18-sized files, removed afterwards).
    Returns {name: path}, plus the good resnet18 file under "good"."""
    work = ou.WorkDir("modex-oracle-bad-")
    try:
        yield _make_files(work.path)
    finally:
        work.cleanup()


def _make_files(d):
    out = {}
    sd = resnet18_state_dict()
    good = d / "good_resnet18.pth"
    torch.save(sd, good)
    out["good"] = good
    data = good.read_bytes()

    def put(name, content):
        out[name] = d / name
        out[name].write_bytes(content)

    # Truncated: inside the storages (central directory gone), and just before the end record.
    put("truncated_half.pth", data[:len(data) // 2])
    put("truncated_tail.pth", data[:-30])
    put("truncated_head.pth", data[:100])
    put("empty.pth", b"")
    put("not_a_checkpoint.pth", b"hello, this is a text file\n" * 10)

    # Corrupted zip structure: end-of-central-directory offset pointing outside the file, and the
    # central directory signature destroyed.
    eocd = data.rfind(b"PK\x05\x06")
    bad = bytearray(data)
    bad[eocd + 16:eocd + 20] = (0xFFFFFF00).to_bytes(4, "little")
    # torch always writes a zip64 end record too: point it outside the file as well.
    z64 = data.rfind(b"PK\x06\x06")
    if z64 >= 0:
        bad[z64 + 48:z64 + 56] = (len(data) * 4).to_bytes(8, "little")
    put("corrupt_cd_offset.pth", bytes(bad))
    cd = data.find(b"PK\x01\x02")
    bad = bytearray(data)
    bad[cd:cd + 64] = b"\xA5" * 64
    put("corrupt_central_directory.pth", bytes(bad))

    # Corrupted data.pkl (same length: the zip itself stays valid).
    with zipfile.ZipFile(good) as zin:
        names = zin.namelist()
        pkl_name = next(n for n in names if n.endswith("/data.pkl"))
        info = zin.getinfo(pkl_name)
    bad = bytearray(data)
    start = data.find(b"\x80\x02", info.header_offset)  # the pickle's PROTO opcode
    for i in range(start + 2, start + min(info.file_size, 400), 7):
        bad[i] = 0xFF
    put("corrupt_pickle.pth", bytes(bad))

    # The same damage behind a valid CRC (the zip re-written around it), so that the pickle
    # parser itself meets it: data.pkl cut in half, and data.pkl with bytes overwritten.
    def rezip(name, edit_pkl):
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(d / name, "w") as zout:
            for item in zin.infolist():
                body = zin.read(item)
                zout.writestr(item.filename, edit_pkl(body) if item.filename == pkl_name else body)
        out[name] = d / name

    rezip("pickle_truncated.pth", lambda b: b[:len(b) // 2])

    def garble(b):
        b = bytearray(b)
        for i in range(2, len(b), 11):
            b[i] = (b[i] * 7 + 0x5B) & 0xFF
        return bytes(b)
    rezip("pickle_garbage.pth", garble)

    # A storage entry the pickle names but the zip lacks.
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(d / "missing_storage.pth", "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith("/data/0"):
                zout.writestr(item.filename, zin.read(item))
    out["missing_storage.pth"] = d / "missing_storage.pth"

    # Malicious pickles: zip checkpoints (what users download), plus a bare pickle file.
    marker = d / "PWNED_MARKER"
    out["marker"] = marker
    torch.save({"conv1.weight": torch.zeros(1), "payload": SystemCall(marker)}, d / "system.pth")
    out["system.pth"] = d / "system.pth"
    torch.save({"state_dict": sd, "hook": EvalCall(marker)}, d / "eval.pth")
    out["eval.pth"] = d / "eval.pth"
    import pickle
    (d / "system_raw.pkl").write_bytes(pickle.dumps(SystemCall(marker), protocol=2))
    out["system_raw.pkl"] = d / "system_raw.pkl"

    # A whole nn.Module (torch.save(model)): needs torchvision's classes, refused.
    torch.save(torchvision.models.resnet18(num_classes=10), d / "whole_module.pth")
    out["whole_module.pth"] = d / "whole_module.pth"

    # Tensors that do not fit their storage.
    storage = torch.zeros(16).storage()
    torch.save(collections.OrderedDict(fc=LyingTensor(storage, 0, (10 ** 6,), (1,))),
               d / "tensor_past_storage.pth")
    out["tensor_past_storage.pth"] = d / "tensor_past_storage.pth"
    torch.save(collections.OrderedDict(fc=LyingTensor(storage, 2 ** 40, (4,), (1,))),
               d / "offset_past_storage.pth")
    out["offset_past_storage.pth"] = d / "offset_past_storage.pth"
    torch.save(collections.OrderedDict(fc=LyingTensor(storage, 0, (4, 4), (2 ** 40, 1))),
               d / "stride_past_storage.pth")
    out["stride_past_storage.pth"] = d / "stride_past_storage.pth"

    # Wrong shape: one resnet18 tensor with another shape.
    wrong = collections.OrderedDict(sd)
    wrong["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 3)
    torch.save(wrong, d / "wrong_shape.pth")
    out["wrong_shape.pth"] = d / "wrong_shape.pth"

    # Unknown architecture.
    torch.save(TinyNet().state_dict(), d / "tiny_cnn.pth")
    out["tiny_cnn.pth"] = d / "tiny_cnn.pth"

    # safetensors: header length past the end, data offsets past the buffer, an unknown dtype.
    small = collections.OrderedDict(sd)
    zf.write_safetensors(d / "ok.safetensors", small)
    st = (d / "ok.safetensors").read_bytes()
    n = int.from_bytes(st[:8], "little")
    put("st_header_too_long.safetensors", (len(st) * 2).to_bytes(8, "little") + st[8:])
    header = json.loads(st[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    for name, mutate in (("st_offsets_past_end", lambda e: e.update(
            data_offsets=[e["data_offsets"][0], e["data_offsets"][0] + 10 ** 12])),
            ("st_unknown_dtype", lambda e: e.update(dtype="Q7")),
            ("st_size_mismatch", lambda e: e.update(shape=[e["shape"][0] + 1] + e["shape"][1:]))):
        h = json.loads(st[8:8 + n])
        mutate(h[first])
        text = json.dumps(h).encode()
        put(f"{name}.safetensors", len(text).to_bytes(8, "little") + text + st[8 + n:])
    put("st_bad_json.safetensors", (20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 64)
    return out


def run_bad(args, out_dir, expect_rc=1):
    out_dir.mkdir(exist_ok=True)
    before = ou.listing(out_dir)
    proc = ou.run_modex(["export", "--format", "onnx", "--output-dir", out_dir, *args], timeout=120)
    assert proc.returncode == expect_rc, (
        f"exit {proc.returncode}, expected {expect_rc}\nstdout: {proc.stdout[-2000:]}\n"
        f"stderr: {proc.stderr[-2000:]}")
    if expect_rc == 1:
        first = proc.stderr.lstrip().splitlines()[0] if proc.stderr.strip() else ""
        assert first.startswith("error: "), f"stderr must begin with 'error: ':\n{proc.stderr}"
    assert ou.listing(out_dir) == before, f"left behind in DIR: {ou.listing(out_dir)}"
    return proc.stderr


CORRUPT = ["truncated_half.pth", "truncated_tail.pth", "truncated_head.pth", "empty.pth",
           "not_a_checkpoint.pth", "corrupt_cd_offset.pth", "corrupt_central_directory.pth",
           "corrupt_pickle.pth", "pickle_truncated.pth", "pickle_garbage.pth",
           "missing_storage.pth", "tensor_past_storage.pth",
           "offset_past_storage.pth", "stride_past_storage.pth",
           "st_header_too_long.safetensors", "st_offsets_past_end.safetensors",
           "st_unknown_dtype.safetensors", "st_size_mismatch.safetensors",
           "st_bad_json.safetensors"]


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_file(files, tmp_path, name):
    err = run_bad(["--checkpoint", files[name]], tmp_path / "out")
    assert name in err or str(files[name]) in err, f"message does not name the file:\n{err}"


@pytest.mark.parametrize("name,global_name", [("system.pth", "system"), ("eval.pth", "eval"),
                                              ("system_raw.pkl", None)])
def test_malicious_pickle_is_not_run(files, tmp_path, name, global_name):
    marker = files["marker"]
    marker.unlink(missing_ok=True)
    err = run_bad(["--checkpoint", files[name]], tmp_path / "out")
    assert not marker.exists(), "the pickle's payload RAN: the marker file was created"
    if global_name:
        assert global_name in err, f"message does not name the refused global {global_name}:\n{err}"


def test_whole_pickled_module_is_refused(files, tmp_path):
    err = run_bad(["--checkpoint", files["whole_module.pth"]], tmp_path / "out")
    assert "ResNet" in err or "torchvision" in err, f"message does not name the class:\n{err}"


def _shape_pattern(shape):
    return r"\D+".join(str(d) for d in shape)


def test_wrong_shape_names_key_and_both_shapes(files, tmp_path):
    err = run_bad(["--checkpoint", files["wrong_shape.pth"]], tmp_path / "out")
    assert "layer2.0.conv1.weight" in err, err
    assert re.search(_shape_pattern([128, 64, 1, 3]), err), f"found shape missing:\n{err}"
    assert re.search(_shape_pattern([128, 64, 3, 3]), err), f"expected shape missing:\n{err}"


def test_unknown_architecture_reports_closest(files, tmp_path):
    err = run_bad(["--checkpoint", files["tiny_cnn.pth"]], tmp_path / "out")
    archs = zf.zoo_archs()
    assert any(a in err for a in archs), f"no closest architecture named:\n{err}"
    low = err.lower()
    assert "missing" in low and "unexpected" in low, err
    assert "conv2.weight" in err, f"the unexpected key conv2.weight is not listed:\n{err}"
    assert "layer1.0.conv1.weight" in err or "features.0.0.weight" in err or \
        "layer1" in err or "features." in err, f"no missing key listed:\n{err}"


def test_arch_override_that_does_not_fit(files, tmp_path):
    err = run_bad(["--checkpoint", files["good"], "--arch", "resnet34"], tmp_path / "out")
    assert "resnet34" in err and "layer1.2" in err, f"should list resnet34's missing keys:\n{err}"


def test_num_classes_override_that_does_not_fit(files, tmp_path):
    err = run_bad(["--checkpoint", files["good"], "--num-classes", "5"], tmp_path / "out")
    assert "5" in err and "10" in err, err


def test_missing_file(tmp_path):
    missing = tmp_path / "no_such_checkpoint.pth"
    err = run_bad(["--checkpoint", missing], tmp_path / "out")
    assert "no_such_checkpoint.pth" in err, err


def test_output_dir_not_writable(files, tmp_path):
    out_dir = tmp_path / "readonly"
    out_dir.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits; the immutable flag stops root too
        made = subprocess.run(["chattr", "+i", str(out_dir)], capture_output=True)
        assert made.returncode == 0, f"cannot make {out_dir} immutable: {made.stderr}"
    else:
        out_dir.chmod(0o555)
    try:
        err = run_bad(["--checkpoint", files["good"]], out_dir)
        assert str(out_dir) in err or "readonly" in err, f"message does not name the dir:\n{err}"
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(out_dir)])
        out_dir.chmod(0o755)


def test_output_dir_is_a_file(files, tmp_path):
    not_dir = tmp_path / "a_file"
    not_dir.write_text("x")
    proc = ou.run_modex(["export", "--format", "onnx", "--checkpoint", files["good"],
                         "--output-dir", not_dir], timeout=120)
    assert proc.returncode == 1 and proc.stderr.lstrip().startswith("error: "), proc.stderr
    assert not_dir.read_text() == "x"


def test_legacy_format_is_supported_or_refused_cleanly(tmp_path):
    """Pre-1.6 files: the issue allows support or a clear error; either way nothing half-done."""
    sd = resnet18_state_dict()
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = ou.run_modex(["export", "--format", "onnx", "--output-dir", out_dir,
                         "--checkpoint", legacy], timeout=120)
    if proc.returncode == 0:
        assert sorted(ou.listing(out_dir)) == ["legacy.json", "legacy.onnx"]
    else:
        assert proc.returncode == 1 and proc.stderr.lstrip().startswith("error: "), proc.stderr
        assert "legacy" in proc.stderr, proc.stderr
        assert ou.listing(out_dir) == []


@pytest.mark.parametrize("args", [
    [],                                        # no --checkpoint
    ["--opset", "10"], ["--opset", "18"],      # outside 11..17
    ["--format", "bogus"],
    ["--no-such-flag"],
    ["--input-size", "zero"],
], ids=["no-checkpoint", "opset10", "opset18", "bad-format", "unknown-flag", "bad-int"])
def test_usage_errors_exit_2(files, tmp_path, args):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    base = ["export", "--output-dir", str(out_dir)]
    if "--format" not in args:
        base += ["--format", "onnx"]
    if args != []:
        base += ["--checkpoint", str(files["good"])]
    proc = ou.run_modex(base + args, timeout=60)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert proc.stderr.strip(), "usage errors must explain themselves on stderr"
    assert ou.listing(out_dir) == []


def test_good_file_passes_the_same_harness(files, tmp_path):
    """The control: the untouched checkpoint exports, so the failures above are about the damage."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = ou.run_modex(["export", "--format", "onnx", "--output-dir", out_dir,
                         "--checkpoint", files["good"]], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(ou.listing(out_dir)) == ["good_resnet18.json", "good_resnet18.onnx"]

"""`modex predict` against PyTorch + torchvision (issue 6, "predict").

Two real torch.save checkpoints from the oracle fixtures (zoo_fixtures.py): mobilenet_v3_small
with no config (ImageNet preprocessing: resize to 256, center crop 224, ImageNet mean/std) and a
training dict with a config (resnet18 at 192, Fashion-MNIST class names, its own mean/std). Each
is exported with `modex export --format both --quantize none,float16`; then `modex predict --json`
on the .pth, .onnx, .tflite and _float16.tflite classifies a folder of images made here in every
format and colour mode modex decodes. The reference: the same image files opened with PIL and
run through torchvision's transforms (Resize, CenterCrop, ToTensor, Normalize) and the PyTorch
model, softmax. Required: the same top-1 class on every image; max |Δprob| <= 1e-4 for float32
models and 1e-2 for float16 weights; class names from the model's metadata; a corrupt image is
reported for that image only (exit 1, the others still classified).

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_predict.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402

CASES = {"mobilenet_v3_small": "zoo-mobilenet_v3_small-a", "train_dict_config": "variant-train_dict_config"}
TOL = {"pth": 1e-4, "onnx": 1e-4, "tflite": 1e-4, "float16": 1e-2}


def _images(folder):
    from PIL import Image
    rng = np.random.default_rng(7)
    folder.mkdir()
    made = []

    def picture(w, h):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
        blobs = rng.normal(0, 40, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
        return np.clip(base + blobs, 0, 255).astype(np.uint8)

    for name, (w, h), mode, fmt in [("wide.jpg", (320, 200), "RGB", "JPEG"), ("tall.png", (150, 260), "RGB", "PNG"),
                                    ("gray.png", (240, 240), "L", "PNG"), ("alpha.png", (200, 180), "RGBA", "PNG"),
                                    ("small.bmp", (100, 90), "RGB", "BMP"), ("exact.jpg", (224, 224), "RGB", "JPEG")]:
        img = Image.fromarray(picture(w, h))
        img = img.convert(mode)
        img.save(folder / name, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        made.append(folder / name)
    return made


def _torch_reference(case, images):
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms as T
    meta = zf.load_meta(case)
    ckpt = torch.load(zf.case_dir(case) / meta["checkpoint"], map_location="cpu")
    cfg = ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    model = getattr(torchvision.models, meta["arch"])(num_classes=meta["num_classes"])
    model.load_state_dict(state)
    model.eval()
    size = cfg.get("input_size", 224)
    mean = cfg.get("mean", [0.485, 0.456, 0.406])
    std = cfg.get("std", [0.229, 0.224, 0.225])
    tf = T.Compose([T.Resize(size * 256 // 224), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    out = {}
    with torch.no_grad():
        for path in images:
            x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
            out[path.name] = torch.softmax(model(x), 1)[0].numpy()
    return out, cfg.get("class_names")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    zf.ensure(list(CASES.values()))
    work = tmp_path_factory.mktemp("predict")
    images = _images(work / "images")
    data = {}
    for key, case in CASES.items():
        meta = zf.load_meta(case)
        ckpt = zf.case_dir(case) / meta["checkpoint"]
        out = work / key
        proc = ou.run_modex(["export", "--checkpoint", ckpt, "--format", "both", "--quantize", "none,float16",
                             "--output-dir", out, "--name", key, "--json"])
        assert proc.returncode == 0, proc.stderr
        probs, names = _torch_reference(case, images)
        models = {"pth": ckpt, "onnx": out / f"{key}.onnx", "tflite": out / f"{key}.tflite",
                  "float16": out / f"{key}_float16.tflite"}
        data[key] = {"models": models, "probs": probs, "names": names}
    return {"images": images, "folder": work / "images", "cases": data, "work": work}


@pytest.mark.parametrize("kind", list(TOL))
@pytest.mark.parametrize("case", list(CASES))
def test_predict_matches_torchvision_and_pytorch(setup, case, kind):
    c = setup["cases"][case]
    proc = ou.run_modex(["predict", c["models"][kind], setup["folder"], "--json", "--top", "3"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    got = {Path(r["image"]).name: r for r in report["results"]}
    assert sorted(got) == sorted(p.name for p in setup["images"])
    worst = 0.0
    for name, want in c["probs"].items():
        r = got[name]
        p = np.asarray(r["probabilities"], dtype=np.float64)
        assert p.shape == want.shape, (name, p.shape, want.shape)
        diff = float(np.abs(p - want).max())
        worst = max(worst, diff)
        assert r["predicted_class"] == int(want.argmax()), (
            f"{case} {kind} {name}: modex says class {r['predicted_class']} ({r['confidence']:.4f}), "
            f"PyTorch {int(want.argmax())} ({want.max():.4f}); max|Δprob| {diff:.2e}")
        assert diff <= TOL[kind], f"{case} {kind} {name}: max|Δprob| {diff:.2e} > {TOL[kind]}"
        assert len(r["top"]) == 3 and r["top"][0]["class"] == r["predicted_class"]
        if c["names"]:
            assert r["class_name"] == c["names"][r["predicted_class"]]
        else:
            assert r["class_name"] is None
    print(f"{case} {kind}: worst max|Δprob| {worst:.2e}")


def test_corrupt_image_is_reported_and_the_rest_classified(setup, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = setup["images"][0]
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "broken.jpg").write_bytes(good.read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")  # not an image extension: not listed
    model = setup["cases"]["mobilenet_v3_small"]["models"]["onnx"]
    proc = ou.run_modex(["predict", model, folder, "--json"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    by_name = {Path(r["image"]).name: r for r in report["results"]}
    assert set(by_name) == {good.name, "broken.jpg"}
    assert "error" in by_name["broken.jpg"] and "broken.jpg" in by_name["broken.jpg"]["error"]
    assert "predicted_class" in by_name[good.name]
    assert report["failed"] == 1


def test_missing_image_and_bad_flags(setup, tmp_path):
    model = setup["cases"]["mobilenet_v3_small"]["models"]["tflite"]
    proc = ou.run_modex(["predict", model, tmp_path / "nope.jpg"])
    assert proc.returncode == 1 and "nope.jpg" in proc.stderr and "error:" in proc.stderr
    proc = ou.run_modex(["predict", model, setup["images"][0], "--mean", "0.5,0.5"])
    assert proc.returncode == 1 and "--mean" in proc.stderr
    proc = ou.run_modex(["predict", model, setup["images"][0], "--layout", "sideways"])
    assert proc.returncode == 2


def test_table_output_names_classes(setup):
    c = setup["cases"]["train_dict_config"]
    proc = ou.run_modex(["predict", c["models"]["tflite"], setup["images"][1], "--top", "2"])
    assert proc.returncode == 0, proc.stderr
    want = c["names"][int(c["probs"][setup["images"][1].name].argmax())]
    assert want in proc.stdout and "%" in proc.stdout


def test_cpp_example_agrees_with_predict(setup):
    """examples/classify.cc (the library example) gives predict's top class and probability."""
    import os
    import subprocess
    exe = os.environ.get("MODEX_CLASSIFY_EXAMPLE")
    if not exe:
        exe = str(ou.REPO / "build" / "examples" / "classify")
    assert Path(exe).is_file(), f"examples/classify not built: {exe}"
    c = setup["cases"]["train_dict_config"]
    image = setup["images"][0]
    out = subprocess.run([exe, str(c["models"]["tflite"]), str(image)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0].split()
    want = c["probs"][image.name]
    assert int(first[0]) == int(want.argmax())
    assert c["names"][int(want.argmax())].split()[0] in out.stdout.splitlines()[0]
    assert abs(float(first[-1].rstrip("%")) - 100 * want.max()) < 0.01

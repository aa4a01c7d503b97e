"""Representative-data pipeline against the references: decoding against Pillow, preprocessing
(Resize + CenterCrop + ToTensor + Normalize, and plain Resize((H, W))) against torchvision on PIL
images, and `calib --output` files read back with numpy.load. Runs the preprocess_tool test
helper ($MODEX_PREPROCESS_TOOL, else build/tests/preprocess_tool).

    MODEX_PREPROCESS_TOOL=build/tests/preprocess_tool /usr/bin/python3 -m pytest -q tests/oracle/test_calib.py

Every comparison prints its max |diff|; bounds: decoding exact, preprocessing < 1e-5 in
normalised units (modex reproduces Pillow's fixed-point resize, so only float rounding remains).
"""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (Debian's python3-torch: missing is an error, never a skip)
from PIL import Image, ImageOps
from torchvision import transforms as T

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import oracle_util as ou  # noqa: E402
REPO = HERE.parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DECODE_TOL = 0
PREPROCESS_TOL = 1e-5


def tool():
    return ou.test_tool("MODEX_PREPROCESS_TOOL", "preprocess_tool")


def run_tool(*args, check=True):
    r = subprocess.run([tool(), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"preprocess_tool {' '.join(map(str, args))} failed: {r.stderr}")
    return r


def fashion_images(n):
    data = gzip.open(FASHION, "rb").read()
    count, rows, cols = np.frombuffer(data[4:16], dtype=">u4")
    pixels = np.frombuffer(data[16:], dtype=np.uint8).reshape(count, rows, cols)
    return [pixels[i] for i in range(n)]


def synthetic(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], -1)
    return np.clip(base + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real-ish images in every format: Fashion-MNIST upscaled (gray and tinted RGB), gradients
    with noise in odd sizes and aspect ratios."""
    d = tmp_path_factory.mktemp("images")
    out = []
    for i, px in enumerate(fashion_images(4)):
        g = Image.fromarray(px).resize((28 * (5 + i), 28 * (4 + 2 * i)), Image.BICUBIC)
        tinted = Image.merge("RGB", [g, g.point(lambda v: v // 2), g.point(lambda v: 255 - v)])
        for fmt, img in [("png", g), ("jpg", tinted), ("bmp", tinted)]:
            p = d / f"fashion{i}.{fmt}"
            img.save(p, quality=92) if fmt == "jpg" else img.save(p)
            out.append(p)
    for i, (w, h) in enumerate([(640, 480), (333, 517), (256, 256), (230, 1000), (180, 120)]):
        img = Image.fromarray(synthetic(w, h, i))
        for fmt in ["png", "jpg", "bmp"]:
            p = d / f"synthetic{i}.{fmt}"
            img.save(p, quality=90) if fmt == "jpg" else img.save(p)
            out.append(p)
    return out


def pil_rgb(path):
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def test_decoding_matches_pillow(images, tmp_path):
    worst = 0
    for p in images:
        run_tool("decode", p, tmp_path / "d.npy")
        got = np.load(tmp_path / "d.npy")
        want = np.asarray(pil_rgb(p))
        assert got.shape == want.shape, p.name
        worst = max(worst, int(np.abs(got.astype(int) - want.astype(int)).max()))
    print(f"\ndecode: {len(images)} images, max |diff| vs Pillow = {worst}")
    assert worst <= DECODE_TOL


@pytest.mark.parametrize("size", [224, 160, 299])
def test_resize_center_crop_matches_torchvision(images, tmp_path, size):
    resize = size * 256 // 224
    tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])
    worst = 0.0
    for p in images:
        run_tool("preprocess", p, tmp_path / "p.npy", "--size", size, size, "--resize", "resize_center_crop",
                 "--resize-size", resize)
        got = np.load(tmp_path / "p.npy")
        want = tf(pil_rgb(p)).unsqueeze(0).numpy()
        assert got.shape == want.shape == (1, 3, size, size)
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"\nResize({resize}) + CenterCrop({size}): {len(images)} images, max |diff| vs torchvision = {worst:.3g}")
    assert worst < PREPROCESS_TOL


@pytest.mark.parametrize("hw", [(224, 224), (96, 160), (300, 200)])
def test_plain_resize_matches_torchvision(images, tmp_path, hw):
    tf = T.Compose([T.Resize(hw), T.ToTensor(), T.Normalize(MEAN, STD)])
    worst = 0.0
    for p in images:
        run_tool("preprocess", p, tmp_path / "p.npy", "--size", hw[0], hw[1], "--resize", "resize", "--layout", "NHWC")
        got = np.load(tmp_path / "p.npy")
        want = tf(pil_rgb(p)).permute(1, 2, 0).unsqueeze(0).numpy()
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"\nResize({hw}): {len(images)} images, max |diff| vs torchvision = {worst:.3g}")
    assert worst < PREPROCESS_TOL


def test_export_metadata_drives_preprocessing(images, tmp_path):
    meta = {"input_size": 192, "resize": "resize_center_crop", "resize_size": 219, "layout": "NCHW",
            "color": "RGB", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    tf = T.Compose([T.Resize(219), T.CenterCrop(192), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    p = images[-2]
    run_tool("preprocess", p, tmp_path / "m.npy", "--metadata", json.dumps(meta))
    got = np.load(tmp_path / "m.npy")
    want = tf(pil_rgb(p)).unsqueeze(0).numpy()
    assert float(np.abs(got - want).max()) < PREPROCESS_TOL


def test_calib_output_is_the_torchvision_batch(tmp_path):
    """calib over a Fashion-MNIST folder (scripts/make_image_folders.py): the .npy numpy reads is
    exactly torchvision's transform of the files the JSON says were used, in order."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_image_folders.py"), str(data), "--per-class", "6"],
                   check=True, capture_output=True)
    (data / "val" / "Bag" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "calib.npy"
    r = run_tool("calib", "--data-dir", data, "--num-samples", 25, "--batch-size", 8, "--seed", 3,
                 "--output", out, "--json", "--no-progress")
    summary = json.loads(r.stdout)
    assert summary["dataset"]["split"] == "val"
    assert summary["samples_drawn"] == 25
    assert summary["decoded"] + len(summary["skipped"]) == 25
    drawn = {c["name"]: c["drawn"] for c in summary["classes"]}
    assert len(drawn) == 10 and min(drawn.values()) >= 2  # stratified
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == (summary["decoded"], 3, 224, 224)
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    want = np.stack([tf(pil_rgb(f)).numpy() for f in summary["files"]])
    diff = float(np.abs(arr - want).max())
    print(f"\ncalib: {arr.shape[0]} Fashion-MNIST images, max |diff| vs torchvision = {diff:.3g}")
    assert diff < PREPROCESS_TOL
    for c, stats in enumerate(summary["channels"]):
        assert abs(stats["mean"] - float(want[:, c].mean())) < 1e-4
    # Same seed, same files; another seed, others.
    again = json.loads(run_tool("calib", "--data-dir", data, "--num-samples", 25, "--seed", 3, "--json",
                                "--no-progress", "--test-batches", 100).stdout)
    assert again["files"] == summary["files"]
    other = json.loads(run_tool("calib", "--data-dir", data, "--num-samples", 25, "--seed", 4, "--json",
                                "--no-progress").stdout)
    assert other["files"] != summary["files"]


def test_uint8_nhwc_output(tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    for i in range(5):
        Image.fromarray(synthetic(120 + 10 * i, 90, i)).save(d / f"{i}.png")
    out = tmp_path / "u8.npy"
    r = run_tool("calib", "--calibration-dir", d, "--input-size", 64, "--resize", "resize", "--layout", "nhwc",
                 "--dtype", "uint8", "--output", out, "--json", "--no-progress")
    summary = json.loads(r.stdout)
    arr = np.load(out)
    assert arr.dtype == np.uint8 and arr.shape == (5, 64, 64, 3)
    want = np.stack([np.asarray(pil_rgb(f).resize((64, 64), Image.BILINEAR)) for f in summary["files"]])
    assert int(np.abs(arr.astype(int) - want.astype(int)).max()) == 0


def test_bad_images_are_errors_naming_the_file(tmp_path):
    p = tmp_path / "broken.jpg"
    Image.fromarray(synthetic(64, 64, 0)).save(p)
    p.write_bytes(p.read_bytes()[:300])
    r = run_tool("decode", p, tmp_path / "x.npy", check=False)
    assert r.returncode == 1 and "broken.jpg" in r.stderr, r.stderr
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000)).save(big)
    r = run_tool("decode", big, tmp_path / "x.npy", "--max-pixels", 1_000_000, check=False)
    assert r.returncode == 1 and "big.png" in r.stderr and "2000000 pixels" in r.stderr, r.stderr

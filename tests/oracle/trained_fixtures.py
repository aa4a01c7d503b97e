"""Classifiers trained on real images, for the quantization-accuracy tests.

For each architecture (resnet18, mobilenet_v2, efficientnet_b0) a torchvision model is trained on
Fashion-MNIST (Debian's dataset-fashion-mnist) with scripts/train_demo.py, and the images are
written as a classification dataset:

    <root>/<data>/val/<class>/<index>.png  training images the models never saw (calibration)
    <root>/<data>/test/<class>/<index>.png the first N test images (held out: accuracy)
    <root>/<model>/model.pth               training-style checkpoint with a config
    <root>/<model>/reference.json          PyTorch float32 on the test PNGs: files, labels,
                                           predictions, accuracy
    <root>/<model>/logits.npy              PyTorch float32 logits [N, 10], same order

<data> and <model> name their parameters, so changing one architecture's training retrains only
that architecture.

The PyTorch reference reads the PNG files exactly as a user would (PIL, RGB, bilinear resize to
the input size, mean/std of the checkpoint's config), so it is the accuracy the float model has on
the same bytes modex and the runtimes are given.

Cached under ~/.cache/modex/trained-fixtures/<key> (key: FIXTURE_VERSION, the training script,
torch version); a first run trains three small models (about ten minutes on 2 cores).
"""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import zoo_fixtures as zf

HERE = Path(__file__).resolve().parent
TRAIN_SCRIPT = HERE.parent.parent / "scripts" / "train_demo.py"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Bump when what a fixture holds changes (the reference computation, the folder layout).
FIXTURE_VERSION = 1
ARCHS = {
    # arch: (input size, training images, learning rate)
    "resnet18": (32, 6400, 2e-3),
    "mobilenet_v2": (32, 9600, 2e-3),
    "efficientnet_b0": (32, 19200, 4e-3),
}
VAL_PER_CLASS = 40
TEST_IMAGES = 1000
TRAIN_IMAGES_SEEN = max(n for _, n, _ in ARCHS.values())


def data_name():
    return f"data-val{VAL_PER_CLASS}-test{TEST_IMAGES}-after{TRAIN_IMAGES_SEEN}"


def model_name(arch):
    size, n_train, lr = ARCHS[arch]
    return f"{arch}-s{size}-n{n_train}-lr{lr:g}"


def fixture_key():
    import hashlib
    h = hashlib.sha256()
    h.update(f"v{FIXTURE_VERSION}".encode())
    h.update(zf._code_fingerprint(TRAIN_SCRIPT.read_text()).encode())
    h.update(f"torch={zf._dist_version('torch')};torchvision={zf._dist_version('torchvision')}".encode())
    return h.hexdigest()[:16]


def fixture_root():
    return zf.cache_base() / "trained-fixtures" / fixture_key()


def class_folder(label):
    return CLASS_NAMES[label].replace("/", "_")


def _read_idx(path):
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(dims)


def _write_dataset(data_dir):
    """val: VAL_PER_CLASS training images per class that no model trains on; test: TEST_IMAGES."""
    import torch
    from PIL import Image
    tmp = data_dir.with_name(data_dir.name + f".tmp{os.getpid()}")
    train_x = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    train_y = _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    test_x = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    test_y = _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    # train_demo.py trains on randperm(60000, seed 0)[:train_images]; take val from the far end.
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0)).numpy()
    unseen = order[TRAIN_IMAGES_SEEN:][::-1]
    counts = [0] * len(CLASS_NAMES)
    for i in unseen:
        label = int(train_y[i])
        if counts[label] >= VAL_PER_CLASS:
            continue
        counts[label] += 1
        folder = tmp / "val" / class_folder(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train_x[i]).save(folder / f"train{i:05d}.png")
        if min(counts) >= VAL_PER_CLASS:
            break
    for i in range(TEST_IMAGES):
        folder = tmp / "test" / class_folder(int(test_y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test_x[i]).save(folder / f"test{i:05d}.png")
    os.replace(tmp, data_dir)


def test_images(data_dir):
    """(paths, labels) of the held-out test images, in a fixed order."""
    paths, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        for p in sorted((Path(data_dir) / "test" / name.replace("/", "_")).glob("*.png")):
            paths.append(p)
            labels.append(label)
    return paths, np.array(labels)


def load_inputs(paths, size, mean, std, layout="nchw"):
    """PNG files -> float32 batch, preprocessed as the checkpoint's config says (plain resize)."""
    from PIL import Image
    batch = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
        batch.append(x.transpose(2, 0, 1) if layout == "nchw" else x)
    return np.stack(batch).astype(np.float32)


def _train(arch, out_dir):
    import torch
    import torchvision
    size, n_train, lr = ARCHS[arch]
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    ckpt = tmp / "model.pth"
    proc = subprocess.run([sys.executable, str(TRAIN_SCRIPT), str(ckpt), "--arch", arch, "--input-size", str(size),
                           "--train-images", str(n_train), "--lr", str(lr), "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training {arch} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    state = torch.load(ckpt, map_location="cpu")
    config = state["config"]
    model = getattr(torchvision.models, arch)(num_classes=len(CLASS_NAMES))
    model.load_state_dict(state["model_state_dict"])
    model.eval()
    data_dir = out_dir.parent / data_name()
    paths, labels = test_images(data_dir)
    x = load_inputs(paths, size, config["mean"], config["std"])
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 250])) for i in range(0, len(x), 250)]).numpy()
    pred = logits.argmax(1)
    np.save(tmp / "logits.npy", logits.astype(np.float32))
    reference = {
        "arch": arch, "input_size": size, "mean": config["mean"], "std": config["std"],
        "files": [str(p.relative_to(data_dir)) for p in paths],
        "labels": labels.tolist(), "predictions": pred.tolist(),
        "accuracy": float((pred == labels).mean()), "training": summary,
    }
    (tmp / "reference.json").write_text(json.dumps(reference, indent=1))
    os.replace(tmp, out_dir)


def ensure(arch, log=None):
    """The fixture for `arch` (trained and cached on first use): a dict with checkpoint, data_dir,
    input_size, class_names, reference (PyTorch float32 on the test PNGs) and logits."""
    if arch not in ARCHS:
        raise ValueError(f"no trained fixture for {arch}; have {sorted(ARCHS)}")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = fixture_root()
    with zf._locked(root.parent / ".lock"):
        if root.parent.is_dir():
            for other in root.parent.iterdir():
                if other.is_dir() and other.name != root.name:
                    import shutil
                    shutil.rmtree(other, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        data, model = root / data_name(), root / model_name(arch)
        if not data.is_dir():
            log(f"writing Fashion-MNIST image folders into {data}")
            _write_dataset(data)
        if not model.is_dir():
            log(f"training {arch} on Fashion-MNIST (cached in {model})")
            _train(arch, model)
    reference = json.loads((model / "reference.json").read_text())
    return {
        "arch": arch,
        "checkpoint": model / "model.pth",
        "data_dir": data,
        "input_size": reference["input_size"],
        "class_names": CLASS_NAMES,
        "reference": reference,
        "logits": np.load(model / "logits.npy"),
    }


if __name__ == "__main__":
    for a in (sys.argv[1:] or ARCHS):
        f = ensure(a)
        print(f"{a}: PyTorch float32 accuracy {100 * f['reference']['accuracy']:.1f}% on "
              f"{len(f['reference']['labels'])} test images ({f['checkpoint']})")

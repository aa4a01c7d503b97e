#!/usr/bin/python3
"""Train the demo classifier: a real torchvision model on Fashion-MNIST, about a minute of CPU.

Writes a training-style checkpoint (the kind users have lying around) for `make demo`:
    {"model_state_dict": ..., "optimizer_state_dict": ..., "epoch": ..., "config": {...}}
The config carries architecture, num_classes, input_size, class_names, mean and std, so the
exported model's metadata can describe its own preprocessing.

Deterministic for a given seed on a given machine (seeded data order and init, single thread).
Must run under Debian's interpreter (/usr/bin/python3), which has torch and torchvision.
"""
import argparse
import gzip
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Statistics of the Fashion-MNIST training images in [0, 1] (the same value on all 3 channels).
MEAN = 0.2860
STD = 0.3530


def read_idx(path):
    """Reads an IDX file (optionally gzip'd) into a uint8 tensor."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(data) != offset + count:
        raise ValueError(f"{path}: expected {offset + count} bytes, found {len(data)}")
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).long()
    return images, labels


def preprocess(images_u8, size):
    """uint8 [N,28,28] -> normalised float [N,3,size,size], exactly what a user's loader would do:
    to [0,1], bilinear resize, grey replicated to 3 channels, (x - mean) / std."""
    x = images_u8.float().div_(255.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    return x.expand(-1, 3, -1, -1).contiguous()


def evaluate(model, images, labels, size, batch=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(preprocess(images[i:i + batch], size))
            correct += (logits.argmax(1) == labels[i:i + batch]).sum().item()
    return correct / len(images)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", help="checkpoint path to write (.pth)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--train-images", type=int, default=6400,
                    help="training images seen (one pass over a seeded subset)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is deterministic and, with Debian's torch, not slower)")
    ap.add_argument("--data-dir", default=FASHION_DIR)
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)

    train_x, train_y = load_split(args.data_dir, "train")
    test_x, test_y = load_split(args.data_dir, "test")
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train_x), generator=gen)[:args.train_images]
    test_x, test_y = test_x[:args.test_images], test_y[:args.test_images]

    model = getattr(torchvision.models, args.arch)(num_classes=len(CLASS_NAMES))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = (len(order) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps,
                                                pct_start=0.15)
    t0 = time.time()
    model.train()
    for step in range(steps):
        idx = order[step * args.batch_size:(step + 1) * args.batch_size]
        x = preprocess(train_x[idx], args.input_size)
        # Cheap augmentation: random horizontal flip (clothes are left/right symmetric).
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    train_seconds = time.time() - t0
    accuracy = evaluate(model, test_x, test_y, args.input_size)

    config = {
        "architecture": args.arch,
        "num_classes": len(CLASS_NAMES),
        "input_size": args.input_size,
        "class_names": CLASS_NAMES,
        "mean": [MEAN] * 3,
        "std": [STD] * 3,
        "resize": "resize",  # trained on images resized straight to input_size, no center crop
        "dataset": "fashion-mnist",
        "test_accuracy": round(accuracy, 4),
    }
    checkpoint = {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "epoch": 1,
        "config": config,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + f".tmp{os.getpid()}"
    torch.save(checkpoint, tmp)
    os.replace(tmp, args.output)

    summary = {"checkpoint": args.output, "architecture": args.arch,
               "input_size": args.input_size, "train_images": len(order),
               "train_seconds": round(train_seconds, 1), "test_images": len(test_x),
               "test_accuracy": round(accuracy, 4)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"trained {args.arch} at {args.input_size}x{args.input_size} on {len(order)} "
              f"Fashion-MNIST images in {train_seconds:.0f} s: test accuracy "
              f"{100 * accuracy:.1f}% on {len(test_x)} images -> {args.output}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes Fashion-MNIST test images as PNG files in the image-classification folder layout:

    DIR/val/<class>/<index>.png     from the first half of the t10k set
    DIR/test/<class>/<index>.png    from the second half (disjoint from val)
    DIR/classes.json                folder names in label order, with the original class names

<index> is the image's index in t10k (zero-padded), so every file traces back to the data set.
Class names are made file-system safe ("T-shirt/top" -> "T-shirt_top"); the folders sort in label
order only by accident, so tools should read classes.json rather than sort the folder names.

    /usr/bin/python3 scripts/make_image_folders.py DIR [--per-class 10] [--rgb]

PNG writing uses Pillow when it is importable (Debian's python3-pil, a dependency of
python3-torchvision), else a small zlib-based writer. Needs no torch.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import zlib

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def folder_name(class_name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in class_name)


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(data) != offset + count:
        raise ValueError(f"{path}: expected {offset + count} bytes, found {len(data)}")
    return dims, data[offset:]


def png_bytes(pixels, width, height, channels):
    """A minimal valid PNG: 8-bit greyscale (1 channel) or RGB (3), filter 0 on every row."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    stride = width * channels
    raw = b"".join(b"\0" + pixels[y * stride:(y + 1) * stride] for y in range(height))
    color_type = 0 if channels == 1 else 2
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_writer(force_zlib):
    if not force_zlib:
        try:
            from PIL import Image

            def write_pil(path, pixels, width, height, channels):
                mode = "L" if channels == 1 else "RGB"
                Image.frombytes(mode, (width, height), pixels).save(path, format="PNG")
            return write_pil, "Pillow"
        except ImportError:
            pass

    def write_zlib(path, pixels, width, height, channels):
        with open(path, "wb") as f:
            f.write(png_bytes(pixels, width, height, channels))
    return write_zlib, "zlib"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", help="root folder to write (val/ and test/ are created inside)")
    ap.add_argument("--per-class", type=int, default=10, help="images per class and split")
    ap.add_argument("--splits", default="val,test", help="comma-separated subset of val,test")
    ap.add_argument("--rgb", action="store_true", help="write 3-channel PNGs (grey replicated)")
    ap.add_argument("--zlib", action="store_true", help="use the built-in PNG writer")
    ap.add_argument("--data-dir", default=FASHION_DIR)
    args = ap.parse_args()

    (n, h, w), images = read_idx(os.path.join(args.data_dir, "t10k-images-idx3-ubyte.gz"))
    (n_labels,), labels = read_idx(os.path.join(args.data_dir, "t10k-labels-idx1-ubyte.gz"))
    if n != n_labels:
        raise SystemExit(f"error: {n} images but {n_labels} labels")
    half = n // 2
    ranges = {"val": range(0, half), "test": range(half, n)}
    splits = [s for s in args.splits.split(",") if s]
    for s in splits:
        if s not in ranges:
            raise SystemExit(f"error: unknown split {s!r} (choose from val, test)")

    write, how = make_writer(args.zlib)
    channels = 3 if args.rgb else 1
    folders = [folder_name(c) for c in CLASS_NAMES]
    written = 0
    for split in splits:
        counts = [0] * len(CLASS_NAMES)
        for folder in folders:
            os.makedirs(os.path.join(args.output, split, folder), exist_ok=True)
        for i in ranges[split]:
            label = labels[i]
            if counts[label] >= args.per_class:
                if min(counts) >= args.per_class:
                    break
                continue
            pixels = images[i * h * w:(i + 1) * h * w]
            if channels == 3:
                pixels = bytes(b for p in pixels for b in (p, p, p))
            write(os.path.join(args.output, split, folders[label], f"{i:05d}.png"),
                  pixels, w, h, channels)
            counts[label] += 1
            written += 1
        if min(counts) < args.per_class:
            print(f"warning: {split}: only {min(counts)} images for some class", file=sys.stderr)
    with open(os.path.join(args.output, "classes.json"), "w") as f:
        json.dump({"folders": folders, "class_names": CLASS_NAMES,
                   "source": "fashion-mnist t10k", "splits": splits}, f, indent=1)
    print(f"wrote {written} {w}x{h} {'RGB' if channels == 3 else 'greyscale'} PNGs "
          f"({args.per_class} per class in {', '.join(splits)}) to {args.output} using {how}")


if __name__ == "__main__":
    main()

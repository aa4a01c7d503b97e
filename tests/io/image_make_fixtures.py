#!/usr/bin/python3
"""Writes image fixtures for io_test's image tests, with Pillow's decoding as the reference.

    /usr/bin/python3 image_make_fixtures.py OUT_DIR

OUT_DIR gets one file per case plus, for decodable ones, <case>.npy: the pixels Pillow
gives for Image.open(f) -> ImageOps.exif_transpose -> convert("RGB") as [H, W, 3] uint8 (for
16-bit grayscale PNG, where Pillow clamps instead of scaling, the high byte instead). Resize
references (<case>.resize_<W>x<H>.npy) are Pillow's Image.resize(BILINEAR), which torchvision's
Resize uses on PIL images. OUT_DIR/manifest.json lists every case:
    {"name", "file", "ref" | null, "error": bool, "resize": [[W, H, ref], ...]}
Needs Pillow and numpy only (Debian's python3-pil, python3-numpy).
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

OUT = None
CASES = []


def gradient_noise(w, h, seed, channels=3):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 255 // max(w + h - 2, 1))], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    return img[..., :channels] if channels < 3 else img


def pil_reference(path):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def add(name, data, ref="pil", error=False, resize=()):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    case = {"name": name, "file": name, "ref": None, "error": error, "resize": []}
    if not error:
        arr = pil_reference(path) if isinstance(ref, str) and ref == "pil" else ref
        np.save(path + ".npy", np.ascontiguousarray(arr))
        case["ref"] = name + ".npy"
        for (w, h) in resize:
            with Image.open(path) as im:
                r = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((w, h), Image.BILINEAR))
            rname = f"{name}.resize_{w}x{h}.npy"
            np.save(os.path.join(OUT, rname), r)
            case["resize"].append([w, h, rname])
    CASES.append(case)


def pil_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def raw_png(arr, bit_depth, color_type, interlace=False):
    """A PNG written by hand (Pillow cannot write 16-bit RGB or Adam7-interlaced files)."""
    h, w = arr.shape[:2]
    dt = ">u2" if bit_depth == 16 else "u1"
    def rows(a):
        return b"".join(b"\0" + a[y].astype(dt).tobytes() for y in range(a.shape[0]))
    if interlace:
        raw = b""
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    else:
        raw = rows(arr)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def exif_with_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def bmp_top_down(data):
    """Pillow writes bottom-up BMPs; flip the rows and negate the height."""
    offset, = struct.unpack_from("<I", data, 10)
    w, h = struct.unpack_from("<ii", data, 18)
    bpp, = struct.unpack_from("<H", data, 28)
    stride = (w * bpp + 31) // 32 * 4
    rows = [data[offset + i * stride: offset + (i + 1) * stride] for i in range(h)]
    out = bytearray(data[:offset]) + b"".join(reversed(rows)) + data[offset + h * stride:]
    struct.pack_into("<i", out, 22, -h)
    return bytes(out)


def main():
    global OUT
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    rgb = gradient_noise(37, 23, 1)
    big = gradient_noise(300, 200, 2)
    im = Image.fromarray(rgb)
    gray = im.convert("L")

    # JPEG
    add("rgb_q90.jpg", pil_bytes(im, "JPEG", quality=90), resize=[(16, 11), (50, 30)])
    add("rgb_444.jpg", pil_bytes(im, "JPEG", quality=95, subsampling=0))
    add("rgb_progressive.jpg", pil_bytes(im, "JPEG", quality=80, progressive=True))
    add("gray.jpg", pil_bytes(gray, "JPEG", quality=90))
    add("cmyk.jpg", pil_bytes(im.convert("CMYK"), "JPEG", quality=95))
    add("big.jpg", pil_bytes(Image.fromarray(big), "JPEG", quality=90), resize=[(224, 149), (256, 170), (73, 301)])
    for o in range(1, 9):
        add(f"exif_orientation_{o}.jpg", pil_bytes(im, "JPEG", quality=90, exif=exif_with_orientation(o)))
    # PNG
    add("rgb.png", pil_bytes(im, "PNG"), resize=[(37, 11), (12, 23), (100, 60), (5, 3)])
    add("big.png", pil_bytes(Image.fromarray(big), "PNG"), resize=[(224, 224), (256, 341), (341, 256), (299, 199)])
    add("gray.png", pil_bytes(gray, "PNG"))
    add("gray_alpha.png", pil_bytes(Image.merge("LA", [gray, gray.point(lambda v: 255 - v)]), "PNG"))
    rgba = im.convert("RGBA")
    rgba.putalpha(gray)
    add("rgba.png", pil_bytes(rgba, "PNG"))
    pal = im.quantize(colors=50)
    add("palette.png", pil_bytes(pal, "PNG"))
    add("palette_trns.png", pil_bytes(pal, "PNG", transparency=3))
    add("bilevel.png", pil_bytes(gray.convert("1"), "PNG"))
    add("gray4.png", pil_bytes(gray, "PNG", bits=4))
    rgb16 = (rgb.astype(np.uint16) * 257 + np.arange(37, dtype=np.uint16)[None, :, None])
    add("rgb16.png", raw_png(rgb16, 16, 2))
    gray16 = (np.asarray(gray).astype(np.uint16) * 256 + 77)
    add("gray16.png", raw_png(gray16, 16, 0), ref=np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2))
    add("interlaced.png", raw_png(rgb, 8, 2, interlace=True))
    add("interlaced16.png", raw_png(rgb16, 16, 2, interlace=True))
    add("exif_orientation_6.png", pil_bytes(im, "PNG", exif=exif_with_orientation(6)))
    # BMP
    add("rgb24.bmp", pil_bytes(im, "BMP"))
    add("rgb24_top_down.bmp", bmp_top_down(pil_bytes(im, "BMP")))
    add("gray8.bmp", pil_bytes(gray, "BMP"))
    add("palette8.bmp", pil_bytes(pal, "BMP"))
    add("bgra32.bmp", pil_bytes(rgba, "BMP"))
    add("bilevel.bmp", pil_bytes(gray.convert("1"), "BMP"))
    # Damaged files: every one must be refused with an error naming it.
    for name in ["rgb_q90.jpg", "rgb_progressive.jpg", "rgb.png", "interlaced.png", "rgb24.bmp", "gray8.bmp"]:
        data = open(os.path.join(OUT, name), "rb").read()
        add("truncated_" + name, data[: len(data) // 2], error=True)
        add("header_only_" + name, data[:40], error=True)
    jpg = bytearray(open(os.path.join(OUT, "rgb_q90.jpg"), "rb").read())
    add("garbage_header.jpg", bytes(jpg[:4]) + b"\x12" * 300, error=True)
    add("not_an_image.png", b"hello, world\n" * 10, error=True)
    add("empty.png", b"", error=True)
    png = bytearray(open(os.path.join(OUT, "rgb.png"), "rb").read())
    png[40] ^= 0xFF  # inside IDAT: the chunk CRC no longer matches
    add("bad_crc.png", bytes(png), error=True)
    add("gif.gif", pil_bytes(im, "GIF"), error=True)

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(CASES, f, indent=1)
    print(f"wrote {len(CASES)} image cases to {OUT}")


if __name__ == "__main__":
    main()

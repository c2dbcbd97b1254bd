#!/usr/bin/python3
"""make_images.py: makes the small PNG/JPEG test images of tests/unit/test_io.c, the
expected decoded pixels (float32 HWC in [0,1], .npy) and torchvision preprocessing
references. Run from anywhere with /usr/bin/python3 (PIL, numpy, torch, torchvision)."""
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 40, 30


def path(name):
    return os.path.join(HERE, name)


def expect(name, arr, scale):
    a = np.asarray(arr).astype(np.float64) / scale
    if a.ndim == 2:
        a = a[:, :, None]
    np.save(path(name), a.astype(np.float32))


def gradient_rgb():
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = x / (W - 1) * 255
    g = y / (H - 1) * 255
    b = 127.5 + 127.5 * np.sin(x / 5.0) * np.cos(y / 4.0)
    return np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)


def write_png16_rgb(name, arr16):
    """16-bit RGB PNG by hand (PIL cannot write it): filter 0 rows, one IDAT."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path(name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    rgb = gradient_rgb()
    alpha = (np.mgrid[0:H, 0:W][1] * 255 // (W - 1)).astype(np.uint8)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))

    Image.fromarray(rgb, "RGB").save(path("rgb.png"))
    expect("rgb.npy", rgb, 255)
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba, "RGBA").save(path("rgba.png"))
    expect("rgba.npy", rgba, 255)
    Image.fromarray(gray, "L").save(path("gray.png"))
    expect("gray.npy", gray, 255)
    # Gray+alpha decodes to RGBA (lp_image has no 2-channel form).
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(path("gray_alpha.png"))
    expect("gray_alpha.npy", np.dstack([gray, gray, gray, alpha]), 255)
    # Palette with one transparent entry (tRNS) decodes to RGBA.
    pal = Image.fromarray(rgb, "RGB").quantize(colors=16)
    pal.info["transparency"] = 0
    pal.save(path("palette.png"), transparency=0)
    expect("palette.npy", np.asarray(Image.open(path("palette.png")).convert("RGBA")), 255)

    y, x = np.mgrid[0:H, 0:W]
    g16 = ((x * 1613 + y * 7 * 257) % 65536).astype(np.uint16)
    Image.fromarray(g16.astype("<u2"), "I;16").save(path("gray16.png"))
    back = np.asarray(Image.open(path("gray16.png"))).astype(np.uint16)
    assert (back == g16).all(), "PIL did not keep the 16-bit gray values"
    expect("gray16.npy", g16, 65535)
    rgb16 = np.stack([x * 1680, y * 2259, (x * y * 37) % 65536], axis=-1).astype(np.uint16)
    write_png16_rgb("rgb16.png", rgb16)
    expect("rgb16.npy", rgb16, 65535)

    Image.fromarray(rgb, "RGB").save(path("rgb.jpg"), quality=90)
    expect("rgb_jpg.npy", np.asarray(Image.open(path("rgb.jpg")).convert("RGB")), 255)
    Image.fromarray(rgb, "RGB").save(path("rgb_progressive.jpg"), quality=90, progressive=True)
    expect("rgb_progressive_jpg.npy", np.asarray(Image.open(path("rgb_progressive.jpg")).convert("RGB")), 255)
    Image.fromarray(gray, "L").save(path("gray.jpg"), quality=90)
    expect("gray_jpg.npy", np.asarray(Image.open(path("gray.jpg"))), 255)

    # Corrupt inputs: each must be a clean LP_ERR_PARSE.
    png = open(path("rgb.png"), "rb").read()
    open(path("bad_truncated.png"), "wb").write(png[: len(png) // 2])
    i = png.index(b"IDAT") + 4 + 20  # a byte inside the compressed data: CRC mismatch
    open(path("bad_crc.png"), "wb").write(png[:i] + bytes([png[i] ^ 0xFF]) + png[i + 1:])
    jpg = open(path("rgb.jpg"), "rb").read()
    open(path("bad_truncated.jpg"), "wb").write(jpg[: len(jpg) * 6 // 10])
    open(path("bad_not_image.png"), "wb").write(b"this is not an image, only text\n")

    # torchvision references: Resize(size) + CenterCrop(crop) + ToTensor + Normalize.
    import torch
    from torchvision import transforms as T
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    img = Image.open(path("rgb.png"))
    for name, size, crop in [("pp_down_20_16.npy", 20, 16), ("pp_up_36_32.npy", 36, 32)]:
        tf = T.Compose([T.Resize(size), T.CenterCrop(crop), T.ToTensor(), norm])
        with torch.no_grad():
            np.save(path(name), tf(img).unsqueeze(0).numpy().astype(np.float32))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""check_explain.py OUT_DIR --stems a,b --methods m1,m2 --shape 1,1,28,28 [--no-pictures]
[--no-report] [--note TEXT]: what `loupe explain` left in OUT_DIR is complete and sane.

Every <stem>_<method>.npy loads with numpy as float32 of the given shape and is finite;
unless --no-pictures, <stem>_input.png and each method's _heat.png and _overlay.png exist
and are PNGs at least 224 px wide; index.html names every method and input, embeds its
pictures as data URIs (one <img per picture) and reaches for nothing outside itself;
no .tmp file is left. --no-report: only the .npy files exist."""
import argparse
import base64
import os
import re
import sys

import numpy as np

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data):
    if not data.startswith(PNG):
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--stems", required=True)
    ap.add_argument("--methods", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--no-pictures", action="store_true")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--note", default=None)
    a = ap.parse_args()
    stems, methods = a.stems.split(","), a.methods.split(",")
    shape = tuple(int(s) for s in a.shape.split(","))
    errors = []
    files = set(os.listdir(a.out))
    expected = set()

    for s in stems:
        for m in methods:
            f = f"{s}_{m}.npy"
            expected.add(f)
            if f not in files:
                errors.append(f"missing {f}")
                continue
            x = np.load(os.path.join(a.out, f))
            if x.dtype != np.float32 or x.shape != shape:
                errors.append(f"{f}: {x.dtype} {x.shape}, expected float32 {shape}")
            elif not np.isfinite(x).all():
                errors.append(f"{f}: not finite")
    pictures = []
    if not a.no_report:
        pictures = [f"{s}_input.png" for s in stems]
        if not a.no_pictures:
            pictures += [f"{s}_{m}_{k}.png" for s in stems for m in methods for k in ("heat", "overlay")]
    for f in pictures:
        expected.add(f)
        if f not in files:
            errors.append(f"missing {f}")
            continue
        w, h = png_size(open(os.path.join(a.out, f), "rb").read())
        if min(w, h) < 224:
            errors.append(f"{f}: {w}x{h}, expected at least 224 px")

    if not a.no_report:
        expected.add("index.html")
        html = open(os.path.join(a.out, "index.html"), encoding="utf-8").read()
        for m in methods:
            if m not in html:
                errors.append(f"index.html does not name {m}")
        for s in stems:
            if s not in html and re.sub(r"_(\d+)$", r".npy[\1]", s) not in html:
                errors.append(f"index.html does not name input {s}")
        n_img = html.count("<img")
        if n_img != len(pictures):
            errors.append(f"index.html has {n_img} <img, expected {len(pictures)}")
        uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
        if len(uris) != n_img:
            errors.append(f"index.html: {len(uris)} data URIs for {n_img} pictures")
        for u in uris:
            try:
                png_size(base64.b64decode(u, validate=True))
            except ValueError as e:
                errors.append(f"index.html: a data URI is not a PNG ({e})")
                break
        if re.search(r'(src|href)="(?!data:)', html) or "url(" in html or "@import" in html:
            errors.append("index.html reaches for an external resource")
        if a.note and a.note not in html:
            errors.append(f"index.html lacks the note '{a.note}'")

    extra = sorted(f for f in files - expected)
    if extra:
        errors.append(f"unexpected files: {', '.join(extra[:8])}")
    for e in errors:
        print("FAIL:", e)
    print(f"{a.out}: {len(files)} files checked, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

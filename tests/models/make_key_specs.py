#!/usr/bin/python3
"""Writes what the model-zoo tests compare against, from torchvision itself.

For every architecture and each of NUM_CLASSES, OUT_DIR/<arch>_<num_classes>.json holds:
  keys                [[name, shape, dtype], ...]: the state dict, in order
  default_input_size  crop size of the DEFAULT weights' eval transforms
  op_counts           {IR op: count} from a torch.fx trace, mapped to modex's op names
  convs               {module path: kernel/stride/padding/dilation/groups/bias} per nn.Conv2d
  batch_norm_eps      {module path: eps} per nn.BatchNorm2d
  sources             {module path: [nearest Conv2d/BatchNorm2d/Linear feeding it, or "image"]}
                      per parametric module: the wiring, independent of activations and adds
  dag_hashes          {module path: hash} per parametric module, and "logits": a Merkle hash of
                      the whole computation feeding it (see dag_hash); equal hashes on modex's
                      graph mean the same ops in the same order on the same modules
No weights are initialised or written: only names, shapes and structure.

Usage: /usr/bin/python3 make_key_specs.py OUT_DIR   (Debian's interpreter, which has torch)
"""
import json
import operator
import os
import sys

import torch
import torch.fx
import torch.nn as nn
import torchvision
import torchvision.models as tvm

ARCHITECTURES = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
]
NUM_CLASSES = [1000, 7]

PARAMETRIC = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
MODULE_OPS = {
    nn.Conv2d: "Conv", nn.BatchNorm2d: "BatchNorm", nn.Linear: "Gemm", nn.ReLU: "Relu",
    nn.ReLU6: "Clip", nn.Hardswish: "HardSwish", nn.Hardsigmoid: "HardSigmoid", nn.SiLU: "Silu",
    nn.Sigmoid: "Sigmoid", nn.MaxPool2d: "MaxPool", nn.AdaptiveAvgPool2d: "GlobalAveragePool",
    nn.Dropout: None,
}
FUNCTION_OPS = {
    operator.add: "Add", operator.iadd: "Add", torch.add: "Add", operator.mul: "Mul", torch.mul: "Mul",
    torch.flatten: "Flatten", nn.functional.adaptive_avg_pool2d: "GlobalAveragePool",
    torchvision.ops.stochastic_depth: None,
}


def skip_init():
    """Shapes are all we need: make torch's initialisers no-ops (big models build in milliseconds)."""
    for name in ["kaiming_normal_", "kaiming_uniform_", "uniform_", "normal_", "zeros_", "ones_",
                 "constant_", "trunc_normal_", "xavier_uniform_", "xavier_normal_"]:
        setattr(nn.init, name, lambda t, *args, **kwargs: t)


def fnv1a64(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def dag_hash(op, name, input_hashes):
    """FNV-1a of "op|name|inputs": name only for parametric modules (it pins the weights), inputs
    sorted for the commutative Add and Mul. tests/models/architectures_test.cc computes the same."""
    if op in ("Add", "Mul"):
        input_hashes = sorted(input_hashes)
    return fnv1a64(f"{op}|{name}|{','.join(input_hashes)}")


def structure(model):
    traced = torch.fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    counts, convs, eps, hashes, dag = {}, {}, {}, {}, {}
    for node in traced.graph.nodes:
        op = None
        inputs = [hashes[p] for p in node.all_input_nodes]
        if node.op == "placeholder":
            hashes[node] = dag_hash("Input", "image", [])
            continue
        if node.op == "output":
            dag["logits"] = inputs[0]
            continue
        if node.op == "call_module":
            m = modules[node.target]
            if type(m) not in MODULE_OPS:
                raise SystemExit(f"unmapped module {node.target}: {type(m).__name__}")
            op = MODULE_OPS[type(m)]
            if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1)):
                raise SystemExit(f"{node.target}: adaptive pool to {m.output_size}")
            if isinstance(m, nn.Conv2d):
                convs[node.target] = {"kernel": list(m.kernel_size), "stride": list(m.stride),
                                      "padding": list(m.padding), "dilation": list(m.dilation),
                                      "groups": m.groups, "bias": m.bias is not None}
            if isinstance(m, nn.BatchNorm2d):
                eps[node.target] = m.eps
        elif node.op == "call_function":
            if node.target not in FUNCTION_OPS:
                raise SystemExit(f"unmapped function {node.target}")
            op = FUNCTION_OPS[node.target]
        elif node.op == "call_method":
            raise SystemExit(f"unmapped method {node.target}")
        if op:
            counts[op] = counts.get(op, 0) + 1
            parametric = node.op == "call_module" and isinstance(modules[node.target], PARAMETRIC)
            hashes[node] = dag_hash(op, node.target if parametric else "", inputs)
            if parametric:
                dag[node.target] = hashes[node]
        else:  # Dropout, stochastic depth: identities at inference
            hashes[node] = inputs[0]

    memo = {}

    def sources_of(node):
        """Nearest parametric modules (or the input) feeding `node`."""
        if node in memo:
            return memo[node]
        found = set()
        for parent in node.all_input_nodes:
            if parent.op == "placeholder":
                found.add("image")
            elif parent.op == "call_module" and isinstance(modules[parent.target], PARAMETRIC):
                found.add(parent.target)
            else:
                found |= sources_of(parent)
        memo[node] = found
        return found

    sources = {}
    for node in traced.graph.nodes:  # topological order keeps the recursion shallow
        found = sources_of(node)
        if node.op == "call_module" and isinstance(modules[node.target], PARAMETRIC):
            sources[node.target] = sorted(found)
    return counts, convs, eps, sources, dag


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_grad_enabled(False)
    skip_init()
    for arch in ARCHITECTURES:
        default_size = tvm.get_model_weights(arch).DEFAULT.transforms().crop_size[0]
        shared = None
        for num_classes in NUM_CLASSES:
            model = getattr(tvm, arch)(num_classes=num_classes).eval()
            if shared is None:
                shared = structure(model)
            counts, convs, eps, sources, dag = shared
            spec = {
                "arch": arch,
                "num_classes": num_classes,
                "default_input_size": default_size,
                "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                         for k, v in model.state_dict().items()],
                "op_counts": counts,
                "convs": convs,
                "batch_norm_eps": eps,
                "sources": sources,
                "dag_hashes": dag,
            }
            with open(os.path.join(out_dir, f"{arch}_{num_classes}.json"), "w") as f:
                json.dump(spec, f)


if __name__ == "__main__":
    main()

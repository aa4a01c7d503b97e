#!/usr/bin/python3
"""Writes the seed corpus of the ONNX importer's fuzz target (tests/fuzz/fuzz_onnx_reader.cc):
tiny valid models that between them reach every op builder, the shape-chain evaluator, typed and
raw initializers and the error paths, plus a truncated file. Deterministic; < 50 KB in total.

    /usr/bin/python3 tests/io/onnx_make_fuzz_corpus.py [OUT_DIR]   (default tests/fuzz/corpus/fuzz_onnx_reader)
"""
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def f32(name, shape, scale=0.1, seed=0):
    return numpy_helper.from_array((np.random.RandomState(seed).randn(*shape) * scale).astype(np.float32), name)


def i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def model(nodes, inputs, outputs, inits, opset):
    graph = helper.make_graph(nodes, "seed", inputs, outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="modex-fuzz-seed")
    m.ir_version = 7 if opset <= 14 else 8
    return m.SerializeToString()


def vi(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def seeds():
    x = vi("x", ["N", 3, 8, 8])
    y = vi("y", None)
    out = {}
    out["conv_relu_pool_gemm.onnx"] = model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], "fc", transB=1),
    ], [x], [y], [f32("w", [4, 3, 3, 3]), f32("b", [4]), f32("fc_w", [5, 4]), f32("fc_b", [5])], 13)

    def view_chain(opset):
        unsq = (helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], "unsq") if opset >= 13
                else helper.make_node("Unsqueeze", ["n"], ["n1"], "unsq", axes=[0]))
        return model([
            helper.make_node("Relu", ["x"], ["r"], "relu"),
            helper.make_node("Shape", ["r"], ["s"], "shape"),
            helper.make_node("Gather", ["s", "zero"], ["n"], "gather", axis=0),
            unsq,
            helper.make_node("Concat", ["n1", "minus_one"], ["t"], "concat", axis=0),
            helper.make_node("Reshape", ["r", "t"], ["y"], "reshape"),
        ], [x], [y], [i64("zero", 0), i64("axes", [0]), i64("minus_one", [-1])], opset)
    out["view_chain_op11.onnx"] = view_chain(11)
    out["view_chain_op13.onnx"] = view_chain(13)

    # torch's F.pad list chain, then pools and a concat.
    out["pad_chain_pools.onnx"] = model([
        helper.make_node("Constant", [], ["c0"], "c0", value=numpy_helper.from_array(np.array([4], np.int64))),
        helper.make_node("Constant", [], ["c1"], "c1", value=numpy_helper.from_array(np.array([1, 1, 2, 0], np.int64))),
        helper.make_node("ConstantOfShape", ["c0"], ["z"], "cos", value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Concat", ["c1", "z"], ["cat"], "cat", axis=0),
        helper.make_node("Reshape", ["cat", "pairs_shape"], ["pairs"], "r1"),
        helper.make_node("Slice", ["pairs", "m1", "big_neg", "zero1", "m1"], ["flip"], "slice"),
        helper.make_node("Transpose", ["flip"], ["t"], "tr", perm=[1, 0]),
        helper.make_node("Reshape", ["t", "m1"], ["flat"], "r2"),
        helper.make_node("Cast", ["flat"], ["pads"], "cast", to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads", "pv"], ["padded"], "pad", mode="constant"),
        helper.make_node("AveragePool", ["padded"], ["a"], "avg", kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("MaxPool", ["padded"], ["m"], "max", kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[1, 1]),
        helper.make_node("Concat", ["a", "m"], ["y"], "concat", axis=1),
    ], [x], [y], [i64("pairs_shape", [-1, 2]), i64("m1", [-1]), i64("big_neg", [-9223372036854775807]),
                  i64("zero1", [0]), numpy_helper.from_array(np.array(0.5, np.float32), "pv")], 13)

    # Gemm forms and an opset-11 Softmax.
    out["gemm_softmax_op11.onnx"] = model([
        helper.make_node("Gemm", ["v", "B", "C"], ["h"], "gemm0", alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["h", "Bt", "Crow"], ["h2"], "gemm1", transB=1),
        helper.make_node("Gemm", ["h2", "B2"], ["h3"], "gemm2", transA=0, beta=0.0),
        helper.make_node("Softmax", ["h3"], ["y"], "softmax", axis=1),
    ], [vi("v", ["N", 4])], [y], [f32("B", [4, 6]), f32("C", [6]), f32("Bt", [5, 6]), f32("Crow", [1, 5]),
                                   f32("B2", [5, 3])], 11)

    # Activations, BatchNorm, Clip, Dropout, Constant, Squeeze/Unsqueeze, typed-field initializers.
    bn_scale = helper.make_tensor("bn_s", TensorProto.FLOAT, [3], [1.0, 0.5, 2.0])  # float_data
    half = helper.make_tensor("half", TensorProto.FLOAT16, [3], np.array([1, 2, 3], np.float16).view(np.uint16).tolist())
    out["activations_op14.onnx"] = model([
        helper.make_node("BatchNormalization", ["x", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], "bn", epsilon=1e-3),
        helper.make_node("HardSwish", ["bn"], ["hs"], "hswish"),
        helper.make_node("LeakyRelu", ["hs"], ["lr"], "leaky", alpha=0.2),
        helper.make_node("PRelu", ["lr", "slope"], ["pr"], "prelu"),
        helper.make_node("HardSigmoid", ["pr"], ["hsg"], "hsig", alpha=0.3, beta=0.4),
        helper.make_node("Cast", ["half"], ["half32"], "cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["half32", "axes12"], ["half4"], "unsq"),
        helper.make_node("Mul", ["hsg", "half4"], ["mul"], "mul"),
        helper.make_node("Constant", [], ["six"], "six", value_float=6.0),
        helper.make_node("Clip", ["mul", "", "six"], ["clip"], "clip"),
        helper.make_node("Dropout", ["clip", "ratio"], ["drop", "mask"], "dropout"),
        helper.make_node("Identity", ["drop"], ["id"], "identity"),
        helper.make_node("Tanh", ["id"], ["th"], "tanh"),
        helper.make_node("Sigmoid", ["th"], ["sg"], "sigmoid"),
        helper.make_node("ReduceMean", ["sg"], ["rm"], "mean", axes=[2, 3], keepdims=1),
        helper.make_node("Squeeze", ["rm", "axes23"], ["sq"], "squeeze"),
        helper.make_node("Sub", ["sq", "one"], ["sub"], "sub"),
        helper.make_node("Div", ["sub", "two"], ["div"], "div"),
        helper.make_node("Add", ["div", "one"], ["y"], "add"),
    ], [x], [y], [bn_scale, f32("bn_b", [3]), f32("bn_m", [3]),
                  numpy_helper.from_array(np.array([1.0, 1.5, 0.5], np.float32), "bn_v"), f32("slope", [3, 1, 1]),
                  half, i64("axes12", [1, 2]), i64("axes23", [2, 3]), numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
                  numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(2.0, np.float32), "two")], 14)

    # auto_pad forms with static spatial dims, MatMul and Transpose.
    out["auto_pad_matmul.onnx"] = model([
        helper.make_node("Conv", ["x", "w"], ["c"], "conv", strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["c"], ["a"], "avg", kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["a", "w2"], ["c2"], "conv2", auto_pad="VALID"),
        helper.make_node("Transpose", ["c2"], ["t"], "tr", perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["t", "proj"], ["y"], "mm"),
    ], [x], [y], [f32("w", [4, 3, 3, 3]), f32("w2", [4, 4, 1, 1]), f32("proj", [4, 2])], 17)
    return out


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "fuzz" / "corpus" / "fuzz_onnx_reader"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = seeds()
    first = files["conv_relu_pool_gemm.onnx"]
    files["truncated.onnx"] = first[: len(first) * 2 // 3]
    total = 0
    for name, data in sorted(files.items()):
        (out_dir / name).write_bytes(data)
        total += len(data)
    print(f"{len(files)} seeds, {total} bytes in {out_dir}")
    assert total < 50_000


if __name__ == "__main__":
    main()

"""What TensorRT's ONNX parser accepts, as data: the operator matrix and the restrictions that
:mod:`v2a_export.export.trt_compat` checks every exported graph against.

Read from onnx/onnx-tensorrt ``docs/operators.md`` at two releases:

- **TensorRT 10.1 GA**, commit 96e7811 (the floor of our ``tensorrt`` extra; the file's header
  still reads "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"),
  whose parser source (``ModelImporter.cpp``, ``onnxOpImporters.cpp``) was read for the rules
  the matrix does not state;
- **TensorRT 10.15 GA** (2026-02-02; "opset 9 to opset 24").

:data:`OPERATORS` is the intersection: an operator both releases mark ``Y``, with the types both
list (they differ only in ``Constant``, ``ConstantOfShape`` and ``DequantizeLinear``, which
gain FP8/FP4/INT4 in 10.15, and ``Pow``, which gains INT32/INT64). A graph that passes builds
on either. The 10.1 matrix spells ``ConstantOfShape``'s INT64 as "INF64"; read as INT64.
Type names are the matrix's (FP32 = ONNX FLOAT, FP16 = FLOAT16, BF16 = BFLOAT16, FP8 =
FLOAT8E4M3FN, FP4 = FLOAT4E2M1).
"""

from __future__ import annotations

TENSORRT = "10.1 and 10.15"
SOURCE = (
    "onnx/onnx-tensorrt docs/operators.md at TensorRT 10.1 GA (commit 96e7811) and 10.15 GA; "
    "parser rules from ModelImporter.cpp and onnxOpImporters.cpp at 10.1 GA"
)
OPSETS = (9, 20)  # the default-domain opsets both releases parse (10.1: 9 to 20)

# operator -> the tensor types both matrices list for it (the type of its data inputs; for
# Constant and ConstantOfShape, of the value it makes)
OPERATORS: dict[str, str] = {
    "Abs": "FP32 FP16 BF16 INT32 INT64",
    "Acos": "FP32 FP16 BF16",
    "Acosh": "FP32 FP16 BF16",
    "Add": "FP32 FP16 BF16 INT32 INT64",
    "And": "BOOL",
    "ArgMax": "FP32 FP16 BF16 INT32 INT64",
    "ArgMin": "FP32 FP16 BF16 INT32 INT64",
    "Asin": "FP32 FP16 BF16",
    "Asinh": "FP32 FP16 BF16",
    "Atan": "FP32 FP16 BF16",
    "Atanh": "FP32 FP16 BF16",
    "AveragePool": "FP32 FP16 BF16",
    "BatchNormalization": "FP32 FP16 BF16",
    "Cast": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "CastLike": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "Ceil": "FP32 FP16 BF16",
    "Celu": "FP32 FP16 BF16",
    "Clip": "FP32 FP16 BF16",
    "Concat": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Constant": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ConstantOfShape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Conv": "FP32 FP16 BF16",
    "ConvTranspose": "FP32 FP16 BF16",
    "Cos": "FP32 FP16 BF16",
    "Cosh": "FP32 FP16 BF16",
    "CumSum": "FP32 FP16 BF16",
    "DeformConv": "FP32 FP16",
    "DepthToSpace": "FP32 FP16 BF16 INT32 INT64",
    "DequantizeLinear": "FP8 INT4 INT8",
    "Div": "FP32 FP16 BF16 INT32 INT64",
    "Dropout": "FP32 FP16 BF16",
    "Einsum": "FP32 FP16 BF16",
    "Elu": "FP32 FP16 BF16",
    "Equal": "FP32 FP16 BF16 INT32 INT64",
    "Erf": "FP32 FP16 BF16",
    "Exp": "FP32 FP16 BF16",
    "Expand": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "EyeLike": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Flatten": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Floor": "FP32 FP16 BF16",
    "Gather": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherElements": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherND": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Gelu": "FP32 FP16 BF16 INT8 INT32 INT64",
    "Gemm": "FP32 FP16 BF16",
    "GlobalAveragePool": "FP32 FP16 BF16",
    "GlobalLpPool": "FP32 FP16 BF16",
    "GlobalMaxPool": "FP32 FP16 BF16",
    "Greater": "FP32 FP16 BF16 INT32 INT64",
    "GreaterOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "GridSample": "FP32 FP16",
    "GroupNormalization": "FP32 FP16 BF16",
    "GRU": "FP32 FP16 BF16",
    "Hardmax": "FP32 FP16 BF16",
    "HardSigmoid": "FP32 FP16 BF16",
    "HardSwish": "FP32 FP16 BF16",
    "Identity": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "If": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ImageScaler": "FP32 FP16 BF16",
    "InstanceNormalization": "FP32 FP16 BF16",
    "IsInf": "FP32 FP16 BF16",
    "IsNaN": "FP32 FP16 BF16 INT32 INT64",
    "LayerNormalization": "FP32 FP16 BF16",
    "LeakyRelu": "FP32 FP16 BF16",
    "Less": "FP32 FP16 BF16 INT32 INT64",
    "LessOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "Log": "FP32 FP16 BF16",
    "LogSoftmax": "FP32 FP16 BF16",
    "Loop": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "LpNormalization": "FP32 FP16 BF16",
    "LpPool": "FP32 FP16 BF16",
    "LRN": "FP32 FP16 BF16",
    "LSTM": "FP32 FP16 BF16",
    "MatMul": "FP32 FP16 BF16",
    "Max": "FP32 FP16 BF16 INT32 INT64",
    "MaxPool": "FP32 FP16 BF16",
    "Mean": "FP32 FP16 BF16 FP8 INT32 INT64",
    "MeanVarianceNormalization": "FP32 FP16 BF16",
    "Min": "FP32 FP16 BF16 INT32 INT64",
    "Mish": "FP32 FP16",
    "Mod": "FP32 FP16 BF16 INT32 INT64",
    "Mul": "FP32 FP16 BF16 INT32 INT64",
    "Neg": "FP32 FP16 BF16 INT32 INT64",
    "NonMaxSuppression": "FP32 FP16",
    "NonZero": "FP32 FP16",
    "Not": "BOOL",
    "OneHot": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Or": "BOOL",
    "Pad": "FP32 FP16 BF16 INT32 INT64",
    "ParametricSoftplus": "FP32 FP16 BF16",
    "Pow": "FP32 FP16 BF16",
    "PRelu": "FP32 FP16 BF16",
    "QuantizeLinear": "FP32 FP16 BF16",
    "RandomNormal": "FP32 FP16 BF16",
    "RandomNormalLike": "FP32 FP16 BF16",
    "RandomUniform": "FP32 FP16 BF16",
    "RandomUniformLike": "FP32 FP16 BF16",
    "Range": "FP32 FP16 BF16 INT32 INT64",
    "Reciprocal": "FP32 FP16 BF16",
    "ReduceL1": "FP32 FP16 BF16 INT32 INT64",
    "ReduceL2": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSumExp": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMax": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMean": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMin": "FP32 FP16 BF16 INT32 INT64",
    "ReduceProd": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSumSquare": "FP32 FP16 BF16 INT32 INT64",
    "Relu": "FP32 FP16 BF16 INT32 INT64",
    "Reshape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Resize": "FP32 FP16 BF16",
    "ReverseSequence": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "RNN": "FP32 FP16 BF16",
    "RoiAlign": "FP32 FP16",
    "Round": "FP32 FP16 BF16",
    "ScaledTanh": "FP32 FP16 BF16",
    "Scan": "FP32 FP16 BF16",
    "Scatter": "FP32 FP16 BF16 INT32 INT64",
    "ScatterElements": "FP32 FP16 BF16 INT32 INT64",
    "ScatterND": "FP32 FP16 BF16 INT32 INT64",
    "Selu": "FP32 FP16 BF16",
    "Shape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Shrink": "FP32 FP16 BF16 INT32 INT64",
    "Sigmoid": "FP32 FP16 BF16",
    "Sign": "FP32 FP16 BF16 INT32 INT64",
    "Sin": "FP32 FP16 BF16",
    "Sinh": "FP32 FP16 BF16",
    "Size": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Slice": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Softmax": "FP32 FP16 BF16",
    "Softplus": "FP32 FP16 BF16",
    "Softsign": "FP32 FP16 BF16",
    "SpaceToDepth": "FP32 FP16 BF16 INT32 INT64",
    "Split": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sqrt": "FP32 FP16 BF16",
    "Squeeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sub": "FP32 FP16 BF16 INT32 INT64",
    "Sum": "FP32 FP16 BF16 INT32 INT64",
    "Tan": "FP32 FP16 BF16",
    "Tanh": "FP32 FP16 BF16",
    "ThresholdedRelu": "FP32 FP16 BF16",
    "Tile": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "TopK": "FP32 FP16 BF16 INT32 INT64",
    "Transpose": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Trilu": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Unsqueeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Upsample": "FP32 FP16 BF16",
    "Where": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Xor": "BOOL",
}

# operators one of the two releases does not parse (N, or absent from its matrix): a graph
# using them fails on at least one supported TensorRT
UNSUPPORTED: dict[str, str] = {
    "AffineGrid": "10.1 N, 10.15 N",
    "Attention": "not in 10.1",
    "Bernoulli": "10.1 N, 10.15 N",
    "BitShift": "10.1 N, 10.15 N",
    "BitwiseAnd": "10.1 N, 10.15 N",
    "BitwiseNot": "10.1 N, 10.15 N",
    "BitwiseOr": "10.1 N, 10.15 N",
    "BitwiseXor": "10.1 N, 10.15 N",
    "BlackmanWindow": "10.1 N",
    "CenterCropPad": "10.1 N, 10.15 N",
    "Col2Im": "10.1 N, 10.15 N",
    "Compress": "10.1 N, 10.15 N",
    "ConcatFromSequence": "10.1 N, 10.15 N",
    "ConvInteger": "10.1 N, 10.15 N",
    "Det": "10.1 N, 10.15 N",
    "DFT": "10.1 N, 10.15 N",
    "DynamicQuantizeLinear": "10.1 N, 10.15 N",
    "HammingWindow": "10.1 N",
    "HannWindow": "10.1 N",
    "ImageDecoder": "10.1 N, 10.15 N",
    "MatMulInteger": "10.1 N, 10.15 N",
    "MaxRoiPool": "10.1 N, 10.15 N",
    "MaxUnpool": "10.1 N, 10.15 N",
    "MelWeightMatrix": "10.1 N, 10.15 N",
    "Multinomial": "10.1 N, 10.15 N",
    "NegativeLogLikelihoodLoss": "10.1 N, 10.15 N",
    "Optional": "10.1 N, 10.15 N",
    "OptionalGetElement": "10.1 N, 10.15 N",
    "OptionalHasElement": "10.1 N, 10.15 N",
    "QLinearConv": "10.1 N, 10.15 N",
    "QLinearMatMul": "10.1 N, 10.15 N",
    "RegexFullMatch": "10.1 N, 10.15 N",
    "RMSNormalization": "not in 10.1",
    "RotaryEmbedding": "not in 10.1",
    "SequenceAt": "10.1 N, 10.15 N",
    "SequenceConstruct": "10.1 N, 10.15 N",
    "SequenceEmpty": "10.1 N, 10.15 N",
    "SequenceErase": "10.1 N, 10.15 N",
    "SequenceInsert": "10.1 N, 10.15 N",
    "SequenceLength": "10.1 N, 10.15 N",
    "SequenceMap": "10.1 N, 10.15 N",
    "SoftmaxCrossEntropyLoss": "10.1 N, 10.15 N",
    "SplitToSequence": "10.1 N, 10.15 N",
    "STFT": "10.1 N",
    "StringConcat": "10.1 N, 10.15 N",
    "StringNormalizer": "10.1 N, 10.15 N",
    "StringSplit": "10.1 N, 10.15 N",
    "TensorScatter": "not in 10.1",
    "TfIdfVectorizer": "10.1 N, 10.15 N",
    "Unique": "10.1 N, 10.15 N",
}


# -- restrictions (the matrices' "Restrictions" column, and the 10.1 importers) --------------

# operator -> {attribute: (ONNX default, the values the parser accepts)}
ATTRIBUTES: dict[str, dict[str, tuple[object, tuple[object, ...]]]] = {
    "Resize": {
        "coordinate_transformation_mode": (
            "half_pixel",
            (
                "half_pixel",
                "pytorch_half_pixel",
                "tf_half_pixel_for_nn",
                "asymmetric",
                "align_corners",
            ),
        ),
        "mode": ("nearest", ("nearest", "linear")),
        "nearest_mode": (
            "round_prefer_floor",
            ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
        ),
        "keep_aspect_ratio_policy": ("stretch", ("stretch",)),
        "antialias": (0, (0,)),
    },
    "ScatterND": {"reduction": ("none", ("none",))},
    "TopK": {"sorted": (1, (1,))},
    "LSTM": {"input_forget": (0, (0,)), "layout": (0, (0,))},
}

# operator -> input positions the parser reads at build time: an initializer or a Constant's
# output ("must be an initializer"; Clip: onnxOpImporters.cpp, "Clip min value must be an
# initializer!", the float path of 10.1)
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Clip": (1, 2),
    "CumSum": (1,),
    "Dropout": (2,),
    "OneHot": (1,),
    "Pad": (3,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceMax": (1,),
    "ReduceMean": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceSum": (1,),
    "ReduceSumSquare": (1,),
    "Slice": (3,),
    "Squeeze": (1,),
    "TopK": (1,),
    "Unsqueeze": (1,),
}

# operator -> how many outputs the parser's importer produces (ModelImporter.cpp refuses a node
# that declares more: "Node has more output tensors than TRT expected")
MAX_OUTPUTS: dict[str, int] = {"LayerNormalization": 1, "MaxPool": 1}

# pooling: 2-D or 3-D only, dilations empty or all ones
POOLING = ("AveragePool", "LpPool", "MaxPool")

# Constant attributes the parser refuses
CONSTANT_ATTRIBUTES_REFUSED = ("sparse_value", "value_string", "value_strings")

# input positions TensorRT computes as shape tensors (host-side INT32/INT64 shape arithmetic):
# dims, starts/ends, pads, repeats, axes, K, depth
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "ConstantOfShape": (0,),
    "Expand": (1,),
    "OneHot": (1,),
    "Pad": (1, 3),
    "Reshape": (1,),
    "Resize": (3,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Tile": (1,),
    "TopK": (1,),
    "Unsqueeze": (1,),
}

# tensor types TensorRT has (onnx TensorProto names); graph inputs and outputs must be one of
# them (ModelImporter.cpp importInput/markOutput via convertDtype; DOUBLE is read as FLOAT,
# which changes the binding, so it is refused here)
TENSOR_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "INT8", "UINT8", "BOOL",
                "FLOAT8E4M3FN", "INT4")  # fmt: skip
# "Quantized Types": only as the quantized side of QuantizeLinear / DequantizeLinear
QUANTIZED_TYPES = ("INT8", "INT4", "FLOAT8E4M3FN", "FLOAT4E2M1")

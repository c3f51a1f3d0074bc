"""The TensorFlow ops a keras-iqa SavedModel holds: data for `keras_iqa.scoring.savedmodel_check`.

Read with `savedmodel_check.graph_ops` from what `keras-iqa export --format savedmodel` wrote for every card (hcl,
hcl-tiny, metaiqa, metaiqa-official, metaiqa-tiny, reqa, reqa-official, reqa-tiny); tests/keras_iqa/test_export.py
exports every tiny card and checks that it passes. A change to the export that adds an op fails that test: add the op
here when it reads no file and runs no code (never file, system or Python ops: ReadFile, WriteFile, MatchingFiles,
PyFunc, ...).

To regenerate: export each card (`keras_iqa.create_model(card)`, `keras_iqa.export.savedmodel.export_savedmodel`), then
union `graph_ops(meta_graph)` over `read_savedmodel(path).meta_graphs`: the ops of functions in `saver_only` go to
`SAVER_OPS` (less those already in `SCORER_OPS`), the rest to `SCORER_OPS`.
"""

#: ops allowed anywhere: the signatures (decode, crop, score), the resource and variable functions run at load
SCORER_OPS = frozenset({
    "AddV2", "All", "Assert", "AssignVariableOp", "AvgPool", "BatchMatMulV2", "BiasAdd", "BroadcastTo", "Cast",
    "ConcatV2", "Const", "Conv2D", "Conv2DBackpropInput", "DecodeImage", "DecodeJpeg", "DecodePaddedRaw",
    "DecodePng", "Einsum", "EnsureShape", "Equal", "Erfc", "ExpandDims", "Fill", "FloorDiv", "FusedBatchNormV3",
    "GatherV2", "Greater", "Identity", "If", "Less", "LessEqual", "LogicalAnd", "LogicalNot", "LogicalOr", "MatMul",
    "MaxPool", "Maximum", "Mean", "Min", "Minimum", "Mul", "Neg", "NoOp", "Pack", "Pad", "Placeholder", "Prod",
    "Range", "ReadVariableOp", "RealDiv", "Relu", "Reshape", "ResizeBicubic", "RightShift", "Round", "Rsqrt",
    "ScaleAndTranslate", "SelectV2", "Shape", "Sigmoid", "Size", "Softmax", "SquaredDifference", "Squeeze",
    "StatefulPartitionedCall", "StatelessCase", "StatelessIf", "StatelessWhile", "StopGradient", "StridedSlice",
    "StringLength", "Sub", "Substr", "Sum", "Tanh", "TensorListConcatV2", "TensorListFromTensor",
    "TensorListGetItem", "TensorListReserve", "TensorListSetItem", "TensorListStack", "Tile", "Transpose",
    "VarHandleOp", "VarIsInitializedOp", "Where", "While", "ZerosLike",
})

#: checkpoint ops, allowed only in the functions that the SavedModel's saver alone reaches (TF Serving restores the
#: variables through them; `tf.saved_model.load` restores them itself)
SAVER_OPS = frozenset({
    "DisableCopyOnRead", "MergeV2Checkpoints", "RestoreV2", "SaveV2", "Select", "ShardedFilename",
    "StaticRegexFullMatch", "StringJoin",
})

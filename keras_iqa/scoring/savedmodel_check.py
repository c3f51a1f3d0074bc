"""The op check run before an untrusted SavedModel is loaded (docs/security.md, Models: data and programs).

A SavedModel is a program: `tf.saved_model.load` runs its resource initializers, and scoring runs its signatures, and
either may hold any TensorFlow op (`WriteFile`, `ReadFile`, `MatchingFiles`, `PyFunc`, ...). `check_savedmodel` reads
`saved_model.pb` with `saved_model_pb2` (nothing is loaded or run), walks every node of every graph and every function of
the function library, and refuses an op that is not in `savedmodel_ops.SCORER_OPS`, naming the op and the function it is
in. The checkpoint ops of `SAVER_OPS` (`RestoreV2`, `SaveV2`, ...) are allowed only in the functions the SavedModel's
saver alone calls (TF Serving restores the variables through them); a function that anything else reaches (a signature,
a resource initializer, the object graph) gets the scorer list. A function reference to a name that is no function of
the library is an op (TensorFlow runs an op named there as a one-node function) and is checked as one.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_iqa.scoring.savedmodel_ops import SAVER_OPS, SCORER_OPS

MAIN_GRAPH = "the main graph"
TRUST_HINT = ("load only a SavedModel you made (keras-iqa export) or verified; to load this one anyway pass "
              "--trust-model (Python: trust=True)")


class UntrustedModelError(ValueError):
    """A model holds an op (or a TFLite custom op) that a keras-iqa scorer does not use; loading needs trust."""


def read_savedmodel(path: os.PathLike):
    """The `SavedModel` proto of the folder `path` (its saved_model.pb), parsed and not loaded."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(path) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as e:  # google.protobuf.message.DecodeError
        raise ValueError(f"{pb}: not a SavedModel ({type(e).__name__}: {e})") from e
    return proto


def _func_refs(attr_value) -> list:
    """Function names referenced by one AttrValue (a `func`, a list of them, nested in their own attrs)."""
    out = []
    if attr_value.HasField("func"):
        out.append(attr_value.func.name)
        for v in attr_value.func.attr.values():
            out.extend(_func_refs(v))
    if attr_value.HasField("list"):
        for f in attr_value.list.func:
            out.append(f.name)
            for v in f.attr.values():
                out.extend(_func_refs(v))
    return out


def _node_calls(node, library) -> list:
    """The functions (or ops named as functions) a node runs: its op when that is a library function, its func attrs."""
    calls = [node.op] if node.op in library else []
    for v in node.attr.values():
        calls.extend(_func_refs(v))
    return calls


def _ops(nodes, library) -> set:
    """The op types some nodes run: their ops, and the names their func attrs give that are no library function."""
    return {n.op for n in nodes if n.op not in library} | {c for n in nodes for c in _node_calls(n, library)
                                                         if c not in library}


def _closure(roots, library) -> set:
    seen, todo = set(), [r for r in roots if r in library]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(c for n in library[name].node_def for c in _node_calls(n, library) if c in library)
    return seen


def graph_ops(meta_graph) -> tuple:
    """`({where: set of op types}, saver_only)` for one MetaGraphDef: where is `MAIN_GRAPH` or a library function's
    name; `saver_only` holds the functions that only the saver's save / restore nodes reach."""
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    saver = meta_graph.saver_def
    saver_nodes = {n.split(":")[0] for n in (saver.save_tensor_name, saver.restore_op_name) if n}
    saver_roots, other_roots = [], list(meta_graph.object_graph_def.concrete_functions)
    for node in meta_graph.graph_def.node:
        (saver_roots if node.name in saver_nodes else other_roots).extend(_node_calls(node, library))
    by_saver = _closure(saver_roots, library)
    strict = _closure(other_roots + [f for f in library if f not in by_saver], library)
    ops = {MAIN_GRAPH: _ops(meta_graph.graph_def.node, library)}
    ops.update({name: _ops(fn.node_def, library) for name, fn in library.items()})
    return ops, set(library) - strict


def check_savedmodel(path: os.PathLike) -> None:
    """Raises `UntrustedModelError` naming the first op (sorted) outside what a keras-iqa scorer needs, and where it is;
    returns None when every op of every graph and function is allowed (see the module docstring)."""
    p = Path(path)
    for name in ("saved_model.pbtxt", "saved_model.cpb"):
        if (p / name).exists():
            raise UntrustedModelError(f"{p}: holds {name} next to saved_model.pb (keras-iqa export writes only "
                                      f"saved_model.pb); {TRUST_HINT}")
    proto = read_savedmodel(p)
    for meta_graph in proto.meta_graphs:
        ops, saver_only = graph_ops(meta_graph)
        for where in sorted(ops):
            allowed = SCORER_OPS | SAVER_OPS if where in saver_only else SCORER_OPS
            bad = sorted(ops[where] - allowed)
            if bad:
                place = where if where == MAIN_GRAPH else f"function {where}"
                raise UntrustedModelError(f"{p}: op {bad[0]} in {place} is not one a keras-iqa scorer uses"
                                          f"{' (also ' + ', '.join(bad[1:]) + ')' if bad[1:] else ''}; "
                                          f"refused before loading: {TRUST_HINT}")


def tflite_custom_ops(data: bytes) -> list:
    """The custom operators (Flex ops = TensorFlow ops run through the Flex delegate, and any other custom op) that a
    .tflite flatbuffer names; keras-iqa exports use builtin operators only."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(data), 0)
    out = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        if builtin == schema.BuiltinOperator.CUSTOM:
            out.append((code.CustomCode() or b"?").decode("utf-8", "replace"))
    return sorted(set(out))


def check_tflite(path: os.PathLike) -> None:
    """Raises `UntrustedModelError` when the .tflite at `path` names custom or Flex operators."""
    p = Path(path)
    try:
        custom = tflite_custom_ops(p.read_bytes())
    except Exception as e:  # a flatbuffer that does not parse
        raise ValueError(f"{p}: not a TFLite model ({type(e).__name__}: {e})") from e
    if custom:
        raise UntrustedModelError(f"{p}: custom operator {custom[0]} is not one a keras-iqa scorer uses"
                                  f"{' (also ' + ', '.join(custom[1:]) + ')' if custom[1:] else ''}; keras-iqa exports "
                                  f"use builtin operators only; {TRUST_HINT.replace('SavedModel', '.tflite')}")

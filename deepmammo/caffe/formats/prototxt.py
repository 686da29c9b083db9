"""Read and write Caffe's text formats: net prototxt and solver prototxt.

Errors name the file, the line and the field (`PrototxtError`). Nets in the old V1 format
(`layers { type: CONVOLUTION }`) and the deprecated `input:` fields are upgraded in memory, as
Caffe's ReadNetParamsFromTextFileOrDie does.
"""
import os
import re

from google.protobuf import text_format

from deepmammo.atomic import write_text
from deepmammo.caffe.proto import caffe_pb2 as pb
from deepmammo.textfile import read_text


class PrototxtError(ValueError):
    """A prototxt file that does not parse or does not describe a valid net or solver."""

    def __init__(self, source, message, line=None, column=None):
        where = source if line is None else f"{source}:{line}:{column or 0}"
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.column = source, line, column


def _parse(text, message, source):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        # protobuf prefixes "line:col : "; keep the explanation, we print the location ourselves.
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1]
        raise PrototxtError(source, detail, line, column) from None
    return message


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such prototxt file")
    return read_text(path, "prototxt")


def parse_net(text, source="<string>"):
    """A NetParameter from prototxt text, upgraded to the current format."""
    from deepmammo.caffe.formats.upgrade import (
        upgrade_net,  # avoids an import cycle with caffemodel
    )

    net = _parse(text, pb.NetParameter(), source)
    check_int_range(net, source)
    return upgrade_net(net, source)


_INT_MAX = 2**31 - 1


def check_int_range(message, source, path=""):
    """Caffe keeps its unsigned sizes (kernel_size, num_output, dim, batch_size, ...) in C
    ints: a value beyond 2^31 - 1 would wrap there, so it is refused here, naming the field."""
    from google.protobuf.descriptor import FieldDescriptor as F
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        repeated = (field.is_repeated if hasattr(field, "is_repeated")
                    else field.label == F.LABEL_REPEATED)
        if field.type == F.TYPE_MESSAGE:
            items = value if repeated else [value]
            for i, item in enumerate(items):
                check_int_range(item, source, f"{name}[{i}]" if repeated else name)
        elif field.type in (F.TYPE_UINT32, F.TYPE_UINT64):
            values = value if repeated else [value]
            for v in values:
                if v > _INT_MAX:
                    raise PrototxtError(source, f"field {name}: {v} is larger than Caffe "
                                                f"accepts ({_INT_MAX})")


def layer_line(path, layer_name):
    """The line (1-based) of `name: "LAYER"` in a prototxt file, or None: for messages about a
    layer of a net that has already been parsed (protobuf keeps no positions)."""
    try:
        lines = read_text(path, "prototxt").splitlines()
    except (OSError, ValueError):
        return None
    pattern = re.compile(r'\bname\s*:\s*["\']' + re.escape(layer_name) + r'["\']')
    return next((i + 1 for i, line in enumerate(lines) if pattern.search(line)), None)


def read_net(path):
    """A NetParameter from a .prototxt file, upgraded to the current format."""
    return parse_net(_read(path), os.fspath(path))


def parse_solver(text, source="<string>"):
    """A SolverParameter from solver prototxt text."""
    solver = _parse(text, pb.SolverParameter(), source)
    validate_solver(solver, source)
    return solver


def read_solver(path):
    """A SolverParameter from a solver .prototxt file."""
    return parse_solver(_read(path), os.fspath(path))


LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")


def validate_solver(solver, source):
    """Reject what Caffe's solver would refuse, naming the field."""
    if solver.HasField("lr_policy") and solver.lr_policy not in LR_POLICIES:
        raise PrototxtError(source, f"field lr_policy: unknown policy {solver.lr_policy!r} "
                                    f"(one of {', '.join(LR_POLICIES)})")
    if solver.HasField("type") and solver.type not in SOLVER_TYPES:
        raise PrototxtError(source, f"field type: unknown solver type {solver.type!r} "
                                    f"(one of {', '.join(SOLVER_TYPES)})")
    if solver.regularization_type not in ("L1", "L2"):
        raise PrototxtError(source, f"field regularization_type: {solver.regularization_type!r} "
                                    "is neither L1 nor L2")


def solver_type(solver):
    """The solver's type name, honouring the legacy `solver_type` enum when `type` is unset."""
    if solver.HasField("type") or not solver.HasField("solver_type"):
        return solver.type
    legacy = pb.SolverParameter.SolverType.Name(solver.solver_type)
    return {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
            "ADADELTA": "AdaDelta", "ADAM": "Adam"}[legacy]


def to_text(message):
    """Prototxt text of any message (Caffe's own text layout: two-space indents)."""
    return text_format.MessageToString(message)


def write_prototxt(message, path):
    """Write a message as prototxt, atomically."""
    write_text(path, to_text(message))

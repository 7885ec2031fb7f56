"""Open Inference Protocol (KServe V2 REST, Triton HTTP) codec: bytes and dicts in, bytes and dicts out.

No web framework here: the Serve handler reads the body and the ``Inference-Header-Content-Length`` header, calls
:func:`decode_infer_request`, runs the model and answers with :func:`encode_infer_response`. Covers the inference
request/response, the error body, server/model metadata and Triton's binary tensor data extension
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md).

>>> import numpy as np
>>> req = decode_infer_request(b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}')
>>> req.inputs["x"]
array([[1., 2.]], dtype=float32)
>>> encode_infer_response("m", {"y": req.inputs["x"] * 2})
(b'{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[2.0,4.0]}]}', \
{'Content-Type': 'application/json'})
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

try:  # several times faster than json on tensor payloads; it ships with Ray
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

_NAMES = "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BYTES".split()
# Protocol datatype -> numpy dtype (BYTES -> object); the binary layout of the fixed-size ones is little-endian.
DATATYPES: dict[str, np.dtype] = dict(
    zip(_NAMES, map(np.dtype, "? u1 u2 u4 u8 i1 i2 i4 i8 f2 f4 f8 O".split()), strict=True)
)
_BY_KIND = {f"{dt.kind}{dt.itemsize}": name for name, dt in DATATYPES.items() if name != "BYTES"}  # byte-order blind
# The JSON value kinds numpy infers that each target kind takes: no strings for FP32, no 1.5 for INT64, bools for BOOL.
_ACCEPTS = {"b": ("b", "true/false"), "i": ("iu", "integers"), "u": ("iu", "integers"), "f": ("iuf", "numbers")}
_LENGTH_HEADER = "Inference-Header-Content-Length"


class ProtocolError(ValueError):
    """A request the protocol refuses; ``status`` is the HTTP status to answer with, ``str(err)`` the reason.

    >>> err = ProtocolError("unknown model 'mnist'", status=404)
    >>> err.status, str(err), ProtocolError("bad").status
    (404, "unknown model 'mnist'", 400)
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def _check(ok: object, reason: str, status: int = 400) -> None:
    if not ok:
        raise ProtocolError(reason, status)


@dataclass
class InferRequest:
    """A decoded inference request: tensors by name; BYTES tensors are flat ``list[str]`` (shape in ``shapes``).

    >>> req = decode_infer_request(b'{"id": "7", "inputs": [{"name": "t", "shape": [2], "datatype": "BYTES",'
    ...                            b' "data": ["a", "b"]}], "outputs": [{"name": "y"}]}')
    >>> req.id, req.inputs, req.shapes, req.datatypes, req.outputs, req.binary_outputs
    ('7', {'t': ['a', 'b']}, {'t': [2]}, {'t': 'BYTES'}, ['y'], set())
    """

    id: str | None
    inputs: dict[str, np.ndarray | list[str]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    outputs: list[str] | None = None  # requested output names; None = all
    binary_outputs: set[str] = field(default_factory=set)  # of the names in `outputs`, those wanted as binary
    parameters: dict = field(default_factory=dict)

    def binary_for(self, names: Iterable[str]) -> set[str]:
        """Which of the produced output ``names`` go binary, also when ``binary_data_output`` asks for all of them.

        >>> req = decode_infer_request(b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", "data": []}],'
        ...                            b' "parameters": {"binary_data_output": true}}')
        >>> req.binary_outputs, sorted(req.binary_for(["a", "b"]))
        (set(), ['a', 'b'])
        """
        if self.outputs is None and self.parameters.get("binary_data_output") is True:
            return set(names)
        return {name for name in names if name in self.binary_outputs}


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj) if orjson else json.dumps(obj, separators=(",", ":")).encode()


def _params(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    _check(params is None or isinstance(params, dict), f"{where}: 'parameters' must be an object")
    return params or {}


def _name(spec: Any, where: str) -> str:
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}: 'name' must be a non-empty string")
    return name


def _from_json(data: Any, dtype: str, shape: list[int], where: str) -> np.ndarray | list[str]:
    _check(isinstance(data, list), f"{where}: 'data' must be a list")
    try:  # infer the JSON value kind first: asarray(..., dtype=float32) would parse "1.5" and wrap -1 into UINT8
        arr = np.asarray(data, dtype=object if dtype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        raise ProtocolError(f"{where}: 'data' is not a flat or rectangular nested list: {err}") from None
    count = math.prod(shape)
    _check(arr.size == count, f"{where}: 'data' has {arr.size} elements, shape {shape} needs {count}")
    if dtype == "BYTES":
        strings = arr.ravel().tolist()
        _check(all(isinstance(s, str) for s in strings), f"{where}: 'data' of a BYTES tensor must hold strings")
        return strings
    target = DATATYPES[dtype]
    kinds, words = _ACCEPTS[target.kind]
    if count and target.kind in "iu" and arr.dtype.kind in "fO":  # ints past int64 make numpy infer float64: be exact
        arr = np.asarray(data, dtype=object)
        ok = all(type(v) is int for v in arr.flat)
    else:
        ok = not count or arr.dtype.kind in kinds
    _check(ok, f"{where}: 'data' of a {dtype} tensor must hold {words}")
    if count and target.kind in "iu":
        info = np.iinfo(target)
        _check(info.min <= arr.min() and arr.max() <= info.max, f"{where}: 'data' is out of range for {dtype}")
    return arr.astype(target, copy=False).reshape(shape)


def _from_binary(raw: memoryview, dtype: str, shape: list[int], where: str) -> np.ndarray | list[str]:
    count = math.prod(shape)
    if dtype != "BYTES":  # a zero-copy, read-only view of the body
        need = count * DATATYPES[dtype].itemsize
        _check(len(raw) == need, f"{where}: binary_data_size is {len(raw)}, shape {shape} of {dtype} needs {need}")
        return np.frombuffer(raw, dtype=DATATYPES[dtype].newbyteorder("<")).reshape(shape)
    strings: list[str] = []
    pos = 0
    while pos < len(raw) and len(strings) < count:  # each element: a 4-byte little-endian length, then the bytes
        size = struct.unpack_from("<I", raw, pos)[0] if pos + 4 <= len(raw) else len(raw)
        _check(pos + 4 + size <= len(raw), f"{where}: BYTES element {len(strings)} runs past its binary_data_size")
        try:
            strings.append(str(raw[pos + 4 : pos + 4 + size], "utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(f"{where}: BYTES element {len(strings)} is not valid UTF-8") from None
        pos += 4 + size
    more = "+" if pos < len(raw) else ""
    _check(
        len(strings) == count and not more,
        f"{where}: binary data holds {len(strings)}{more} BYTES elements, shape {shape} needs {count}",
    )
    return strings


def decode_infer_request(
    body: bytes, header_length: int | str | None = None, *, max_elements: int | None = None
) -> InferRequest:
    """Decode an inference request body; raises only :class:`ProtocolError`, whatever the bytes.

    ``header_length`` is the ``Inference-Header-Content-Length`` header, as int or str (None: the body is all JSON).
    Binary inputs carry ``parameters.binary_data_size`` and their bytes follow the JSON header in input order;
    binary numeric inputs are read-only views of ``body``. More than ``max_elements`` elements in all: status 413.

    >>> head = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]}'
    >>> decode_infer_request(head + bytes([1, 0, 0, 0, 2, 0, 0, 0]), len(head)).inputs["x"]
    array([1, 2], dtype=int32)
    >>> decode_infer_request(head + b"\\0" * 7, str(len(head)))
    Traceback (most recent call last):
    deepseek_ray.deploy.protocol.ProtocolError: input 'x': binary_data_size is 8 but only 7 bytes are left in the body
    """
    try:
        return _decode(body, header_length, max_elements)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, struct.error) as err:  # safety net: stay a 400
        raise ProtocolError(f"malformed request: {err}") from None


def _decode(body: bytes, header_length: int | str | None, max_elements: int | None) -> InferRequest:
    size, hint = len(body), ""
    if header_length is None:
        hint = f" (a body with binary tensor data needs the {_LENGTH_HEADER} header)"
    else:
        text = str(header_length)
        _check(
            text.isascii() and text.isdigit() and int(text) <= size,
            f"{_LENGTH_HEADER} must be an integer from 0 to the body size {size}, got {text!r}",
        )
        size = int(text)
    try:
        doc = orjson.loads(body[:size]) if orjson else json.loads(body[:size])
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"request body is not valid JSON: {err}{hint}") from None
    _check(isinstance(doc, dict), "request body must be a JSON object")
    _check(doc.get("id") is None or isinstance(doc["id"], str), "'id' must be a string")
    req = InferRequest(doc.get("id"), parameters=_params(doc, "request"))
    inputs = doc.get("inputs")
    _check(isinstance(inputs, list) and inputs, "'inputs' must be a non-empty list")
    tail, offset, total, last = memoryview(body)[size:], 0, 0, "the JSON header"
    for i, spec in enumerate(inputs):
        name = _name(spec, f"inputs[{i}]")
        where, shape, dtype = f"input {name!r}", spec.get("shape"), spec.get("datatype")
        _check(name not in req.inputs, f"{where}: duplicate input name")
        _check(
            isinstance(shape, list) and len(shape) <= 64 and all(type(d) is int and d >= 0 for d in shape),
            f"{where}: 'shape' must be a list of at most 64 non-negative integers",
        )
        _check(math.prod(d or 1 for d in shape) < 2**60, f"{where}: 'shape' is too large")  # numpy's limits
        _check(isinstance(dtype, str) and dtype in DATATYPES, f"{where}: 'datatype' must be one of {', '.join(_NAMES)}")
        total += math.prod(shape)
        if max_elements is not None and total > max_elements:  # before any tensor is built
            raise ProtocolError(f"{where}: the request has more than {max_elements} tensor elements", status=413)
        params = _params(spec, where)
        _check("shared_memory_region" not in params, f"{where}: shared memory inputs are not supported")
        nbytes = params.get("binary_data_size")
        if nbytes is None:
            _check("data" in spec, f"{where}: needs 'data' or parameters.binary_data_size")
            req.inputs[name] = _from_json(spec["data"], dtype, shape, where)
        else:
            _check(
                type(nbytes) is int and nbytes >= 0 and "data" not in spec,
                f"{where}: parameters.binary_data_size must be a non-negative integer, with no 'data'",
            )
            _check(
                offset + nbytes <= len(tail),
                f"{where}: binary_data_size is {nbytes} but only {len(tail) - offset} bytes are left in the body{hint}",
            )
            req.inputs[name] = _from_binary(tail[offset : offset + nbytes], dtype, shape, where)
            offset, last = offset + nbytes, f"the binary data of {where}"
        req.shapes[name], req.datatypes[name] = shape, dtype
    _check(offset == len(tail), f"{len(tail) - offset} unexpected bytes after {last}")
    _requested_outputs(doc.get("outputs"), req)
    return req


def _requested_outputs(outputs: Any, req: InferRequest) -> None:
    default = req.parameters.get("binary_data_output", False)
    _check(type(default) is bool, "request: parameters.binary_data_output must be true or false")
    if not outputs:  # absent or [] both mean all outputs
        return
    _check(isinstance(outputs, list), "'outputs' must be a list")
    req.outputs = []
    for i, spec in enumerate(outputs):
        name = _name(spec, f"outputs[{i}]")
        where = f"output {name!r}"
        _check(name not in req.outputs, f"{where}: requested twice")
        params = _params(spec, where)
        _check(
            "shared_memory_region" not in params and "classification" not in params,
            f"{where}: shared memory and classification outputs are not supported",
        )
        binary = params.get("binary_data", default)  # the per-output flag overrides binary_data_output
        _check(type(binary) is bool, f"{where}: parameters.binary_data must be true or false")
        req.outputs.append(name)
        if binary:
            req.binary_outputs.add(name)


def encode_infer_response(
    model_name: str,
    outputs: dict[str, np.ndarray],
    *,
    request_id: str | None = None,
    model_version: str | None = None,
    binary: Collection[str] = frozenset(),
) -> tuple[bytes, dict[str, str]]:
    """Encode outputs as a response body plus its HTTP headers; the outputs named in ``binary`` go as raw bytes.

    Str, bytes and object arrays are BYTES (in binary form each element has a 4-byte little-endian length prefix);
    a BYTES element that is not UTF-8 cannot go in JSON: ProtocolError asking for binary output. NaN/inf: JSON null.

    >>> encode_infer_response("m", {"y": np.array([1, 2], dtype=np.int16)}, binary={"y"}, request_id="7")
    (b'{"model_name":"m","id":"7","outputs":[{"name":"y","datatype":"INT16","shape":[2],\
"parameters":{"binary_data_size":4}}]}\\x01\\x00\\x02\\x00', \
{'Inference-Header-Content-Length': '119', 'Content-Type': 'application/octet-stream'})
    """
    header: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        header["model_version"] = model_version
    if request_id is not None:
        header["id"] = request_id
    header["outputs"], chunks = [], []
    for name, value in outputs.items():
        arr = np.asarray(value)
        dtype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": dtype, "shape": list(arr.shape)}
        if name in binary:
            if dtype == "BYTES":  # ravel().tolist() gives str for "U" arrays, bytes for "S", the objects for "O"
                encoded = [s if isinstance(s, bytes) else str(s).encode() for s in arr.ravel().tolist()]
                raw = b"".join(struct.pack("<I", len(s)) + s for s in encoded)
            else:
                raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif dtype == "BYTES":
            try:
                entry["data"] = [s.decode() if isinstance(s, bytes) else str(s) for s in arr.ravel().tolist()]
            except UnicodeDecodeError:
                raise ProtocolError(f"output {name!r} is not UTF-8 text: request it with binary_data=true") from None
        else:
            entry["data"] = arr.ravel().tolist()  # C-level conversion to Python numbers
        header["outputs"].append(entry)
    head = _dumps(header)
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *chunks]), {_LENGTH_HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def error_body(message: str) -> bytes:
    """The protocol's error response body.

    >>> error_body("unknown model 'x'")
    b'{"error":"unknown model \\'x\\'"}'
    """
    return _dumps({"error": message})


def server_metadata(name: str, version: str, extensions: list[str]) -> dict:
    """The server metadata response (``GET /v2``).

    >>> server_metadata("deepseek-ray", "0.1.0", ["binary_tensor_data"])
    {'name': 'deepseek-ray', 'version': '0.1.0', 'extensions': ['binary_tensor_data']}
    """
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str,
    inputs: list[dict],
    outputs: list[dict],
    *,
    versions: list[str] | None = None,
    platform: str = "onnxruntime_onnx",
) -> dict:
    """The model metadata response (``GET /v2/models/{name}``); tensors are ``{name, datatype, shape}``, -1 = any size.

    A tensor's datatype may be given as a numpy dtype.

    >>> model_metadata("mnist", [{"name": "x", "datatype": np.float32, "shape": [-1, 784]}],
    ...                [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}], versions=["1"])
    {'name': 'mnist', 'versions': ['1'], 'platform': 'onnxruntime_onnx', \
'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 784]}], \
'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 10]}]}
    """

    def tensor(spec: dict) -> dict:
        dtype = spec["datatype"] if isinstance(spec["datatype"], str) else datatype_of(spec["datatype"])
        return {"name": spec["name"], "datatype": dtype, "shape": [int(d) for d in spec["shape"]]}

    meta: dict[str, Any] = {"name": name} | ({} if versions is None else {"versions": list(versions)})
    return meta | {"platform": platform, "inputs": [tensor(t) for t in inputs], "outputs": [tensor(t) for t in outputs]}


def datatype_of(dtype: npt.DTypeLike) -> str:
    """The protocol datatype of a numpy dtype (str, bytes and object are BYTES); ProtocolError, status 500, if none.

    >>> datatype_of(np.float32), datatype_of(np.dtype(">i8")), datatype_of(np.array(["a"]).dtype), datatype_of(bool)
    ('FP32', 'INT64', 'BYTES', 'BOOL')
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ProtocolError(f"{dtype!r} is not a numpy dtype", status=500) from None
    name = "BYTES" if dt.kind in "OSU" else _BY_KIND.get(f"{dt.kind}{dt.itemsize}")
    _check(name, f"numpy dtype {dt} has no Open Inference Protocol datatype", status=500)
    return str(name)

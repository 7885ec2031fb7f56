"""The Open Inference Protocol codec, with the real Triton HTTP client (tritonclient) at the other end. No Ray."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from deepseek_ray.deploy import protocol
from deepseek_ray.deploy.protocol import (
    DATATYPES,
    ProtocolError,
    datatype_of,
    decode_infer_request,
    encode_infer_response,
    error_body,
    model_metadata,
    server_metadata,
)

Client = httpclient.InferenceServerClient
LENGTH = "Inference-Header-Content-Length"

_rng = np.random.default_rng(0)
ARRAYS = {
    "FP32": _rng.standard_normal((2, 784)).astype(np.float32),
    "FP64": np.array([[1e-300, -2.5, 1 / 3]]),
    "FP16": np.array([[0.1, -65504.0, 6e-8]], dtype=np.float16),
    "INT64": np.array([[-(2**63), 2**63 - 1, 0], [1, -1, 7]], dtype=np.int64),
    "INT32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "INT8": np.array([[-128], [127]], dtype=np.int8),
    "UINT8": np.arange(6, dtype=np.uint8).reshape(2, 3),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "BOOL": np.array([[True, False, True]]),
    "BYTES": np.array([["héllo", ""], ["a b", "\x00z"]], dtype=object),
}


def _input(name: str, arr: np.ndarray, binary: bool) -> httpclient.InferInput:
    return httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype)).set_data_from_numpy(
        arr, binary_data=binary
    )


def _decode_from_client(inputs, outputs=None, request_id="", **kwargs):
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id=request_id, **kwargs)
    return decode_infer_request(body, json_size)


def _assert_same(got, arr: np.ndarray) -> None:
    if arr.dtype == object:
        assert got == [s.decode() if isinstance(s, bytes) else s for s in arr.ravel().tolist()]
    else:
        assert isinstance(got, np.ndarray) and got.dtype == arr.dtype and got.shape == arr.shape
        assert np.array_equal(got, arr)


def _parse(body: bytes, headers: dict[str, str]):
    length = headers.get(LENGTH)
    return Client.parse_response_body(body, header_length=None if length is None else int(length))


# ---- requests: tritonclient encodes, we decode ----


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_decodes_tritonclient_inputs(datatype, binary):
    arr = ARRAYS[datatype]
    req = _decode_from_client([_input("x", arr, binary)])
    _assert_same(req.inputs["x"], arr)
    assert req.shapes == {"x": list(arr.shape)} and req.datatypes == {"x": datatype}


def test_decodes_bytes_objects_and_binary_views():
    words = np.array([b"caf\xc3\xa9", b"", b"x" * 300], dtype=object)  # utf-8 bytes, as clients often send them
    req = _decode_from_client([_input("t", words, True), _input("f", ARRAYS["FP32"], True)])
    assert req.inputs["t"] == ["café", "", "x" * 300]
    assert not req.inputs["f"].flags.writeable  # a zero-copy view of the body


def test_decodes_mixed_request_with_requested_outputs():
    arrays = {"img": ARRAYS["FP32"], "ids": ARRAYS["INT64"], "txt": ARRAYS["BYTES"], "mask": ARRAYS["BOOL"]}
    inputs = [_input(n, a, b) for (n, a), b in zip(arrays.items(), [True, False, True, False], strict=True)]
    outputs = [httpclient.InferRequestedOutput("probs"), httpclient.InferRequestedOutput("label", binary_data=False)]
    req = _decode_from_client(inputs, outputs, request_id="42", parameters={"temperature": 0.5})
    assert list(req.inputs) == list(arrays) and req.id == "42" and req.parameters == {"temperature": 0.5}
    for name, arr in arrays.items():
        _assert_same(req.inputs[name], arr)
    assert req.outputs == ["probs", "label"] and req.binary_outputs == {"probs"}
    assert req.binary_for(["probs", "label"]) == {"probs"}


def test_all_outputs_binary_when_client_lists_none():
    req = _decode_from_client([_input("x", ARRAYS["INT8"], False)])  # the client then sets binary_data_output
    assert req.id is None and req.outputs is None and req.binary_outputs == set()
    assert req.binary_for(["a", "b"]) == {"a", "b"}


def test_per_output_flag_overrides_binary_data_output():
    body = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    req = decode_infer_request(body)
    assert req.outputs == ["a", "b"] and req.binary_outputs == {"a"} and req.binary_for(["a", "b", "c"]) == {"a"}


@pytest.mark.parametrize(
    "data", [[1, 2.5, 3, 4, 5, 6], [[1, 2.5, 3], [4, 5, 6]], [[[1], [2.5]], [[3], [4]], [[5], [6]]]]
)
def test_flat_and_nested_json_data(data):
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": data}]}).encode()
    got = decode_infer_request(body).inputs["x"]
    assert got.dtype == np.float32 and np.array_equal(got, [[1, 2.5, 3], [4, 5, 6]])


def test_empty_tensors():
    body = json.dumps({"inputs": [{"name": "x", "shape": [0, 3], "datatype": "INT64", "data": []}]}).encode()
    assert decode_infer_request(body).inputs["x"].shape == (0, 3)
    req = _decode_from_client(
        [_input("e", np.zeros((2, 0), np.float32), True), _input("s", np.array([], object), True)]
    )
    assert req.inputs["e"].shape == (2, 0) and req.inputs["s"] == []


# ---- responses: we encode, tritonclient parses ----


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_tritonclient_parses_our_outputs(datatype, binary):
    arr = ARRAYS[datatype]
    body, headers = encode_infer_response(
        "m", {"y": arr}, request_id="r1", model_version="3", binary={"y"} if binary else set()
    )
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")
    assert (LENGTH in headers) == binary
    result = _parse(body, headers)
    assert {k: result.get_response()[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": "m",
        "model_version": "3",
        "id": "r1",
    }
    got = result.as_numpy("y")
    assert result.get_output("y")["datatype"] == datatype and got.shape == arr.shape
    if datatype == "BYTES":  # tritonclient gives bytes back from binary, the JSON strings from JSON
        assert got.ravel().tolist() == [s.encode() if binary else s for s in arr.ravel().tolist()]
    else:
        assert got.dtype == arr.dtype and np.array_equal(got, arr)


def test_mixed_response_and_header_length():
    outputs = {"a": ARRAYS["FP32"], "b": ARRAYS["INT64"], "c": np.array(["x", "yé"]), "d": ARRAYS["FP16"]}
    body, headers = encode_infer_response("m", outputs, binary={"a", "c", "d", "not-produced"})
    head = json.loads(body[: int(headers[LENGTH])])
    assert [o["name"] for o in head["outputs"]] == ["a", "b", "c", "d"] and "data" in head["outputs"][1]
    result = _parse(body, headers)
    for name in ("a", "b", "d"):
        assert np.array_equal(result.as_numpy(name), outputs[name])
    assert result.as_numpy("c").tolist() == [b"x", "yé".encode()]


def test_response_edge_arrays():
    outputs = {
        "be": np.array([1.5, -2.0], dtype=">f4"),
        "scalar": np.float64(3.25),
        "empty": np.zeros((0, 2), np.int32),
    }
    for binary in (set(), set(outputs)):
        result = _parse(*encode_infer_response("m", outputs, binary=binary))
        assert result.as_numpy("be").tolist() == [1.5, -2.0] and result.get_output("be")["datatype"] == "FP32"
        assert result.as_numpy("scalar").shape == () and result.as_numpy("scalar") == 3.25
        assert result.as_numpy("empty").shape == (0, 2)


def test_non_utf8_bytes_output():
    raw = np.array([b"\xff\x00", b"ok"], dtype=object)
    result = _parse(*encode_infer_response("m", {"blob": raw}, binary={"blob"}))
    assert result.as_numpy("blob").tolist() == [b"\xff\x00", b"ok"]
    with pytest.raises(ProtocolError, match="output 'blob'.*binary_data"):
        encode_infer_response("m", {"blob": raw})


def test_round_trip_through_both_codecs():
    req = _decode_from_client([_input("x", ARRAYS["FP32"], True)], [httpclient.InferRequestedOutput("y")])
    out = {"y": np.asarray(req.inputs["x"]) * 2}
    result = _parse(*encode_infer_response("m", out, request_id=req.id, binary=req.binary_for(out)))
    assert np.array_equal(result.as_numpy("y"), ARRAYS["FP32"] * 2)


def test_json_fallback_matches_orjson(monkeypatch):
    outputs = {"a": ARRAYS["FP32"][:, :5], "b": ARRAYS["BYTES"], "c": ARRAYS["BOOL"]}
    fast = encode_infer_response("m", outputs, binary={"b"}, request_id="1")
    body, json_size = Client.generate_request_body([_input("x", ARRAYS["INT64"], False)])
    monkeypatch.setattr(protocol, "orjson", None)
    assert encode_infer_response("m", outputs, binary={"b"}, request_id="1") == fast
    assert error_body("é") == b'{"error":"\\u00e9"}' and json.loads(error_body("é")) == {"error": "é"}
    _assert_same(decode_infer_request(body, json_size).inputs["x"], ARRAYS["INT64"])
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_infer_request(b"[" * 100_000)


# ---- the small pieces ----


def test_datatypes_match_tritonclient():
    assert list(DATATYPES) == "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BYTES".split()
    for name, dtype in DATATYPES.items():
        assert dtype == np.dtype(triton_to_np_dtype(name)) and np_to_triton_dtype(dtype) == name
        assert datatype_of(dtype) == name and datatype_of(dtype.newbyteorder(">")) == name
    assert datatype_of(np.array(["a"]).dtype) == datatype_of(np.array([b"a"]).dtype) == "BYTES"
    for bad in (np.complex64, "datetime64[s]", "not-a-dtype"):
        with pytest.raises(ProtocolError) as err:
            datatype_of(bad)
        assert err.value.status == 500


def test_metadata_and_error_bodies():
    assert json.loads(error_body('bad "x"')) == {"error": 'bad "x"'}
    assert server_metadata("s", "1", ["binary_tensor_data"]) == {
        "name": "s",
        "version": "1",
        "extensions": ["binary_tensor_data"],
    }
    meta = model_metadata("m", [{"name": "x", "datatype": np.int64, "shape": (-1, 3)}], [])
    assert meta == {
        "name": "m",
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 3]}],
        "outputs": [],
    }
    assert model_metadata("m", [], [], versions=["1", "2"], platform="pytorch")["versions"] == ["1", "2"]
    assert ProtocolError("x").status == 400 and isinstance(ProtocolError("x"), ValueError)


# ---- refusals ----

X = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}


def _body(*inputs, **top) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def _bin(spec: dict, payload: bytes, **top) -> tuple[bytes, int]:
    head = _body({**spec, "parameters": {"binary_data_size": len(payload)}}, **top)
    return head + payload, len(head)


def _with(**changes) -> dict:
    return {k: v for k, v in {**X, **changes}.items() if v is not ...}


_words = b"\x02\x00\x00\x00ab"
_X8, _X8_HEAD = _bin(_with(data=...), b"\0" * 8)
ERRORS = [
    # (body, header_length, reason that must appear)
    (b"not json", None, "not valid JSON"),
    (b"[1]", None, "must be a JSON object"),
    (b"{}", None, "'inputs' must be a non-empty list"),
    (_body(), None, "'inputs' must be a non-empty list"),
    (b'{"inputs": {}}', None, "'inputs' must be a non-empty list"),
    (_body(5), None, "inputs[0]: 'name'"),
    (_body(_with(name=...)), None, "inputs[0]: 'name'"),
    (_body(_with(name="")), None, "inputs[0]: 'name'"),
    (_body(X, _with(name="y"), _with(name=7)), None, "inputs[2]: 'name'"),
    (_body(_with(shape=...)), None, "input 'x': 'shape'"),
    (_body(_with(shape=[-2])), None, "input 'x': 'shape'"),
    (_body(_with(shape=[2.0])), None, "input 'x': 'shape'"),
    (_body(_with(shape=[True, True])), None, "input 'x': 'shape'"),
    (_body(_with(shape="2")), None, "input 'x': 'shape'"),
    (_body(_with(shape=[1] * 65)), None, "input 'x': 'shape' must be a list of at most 64 non-negative integers"),
    (_body(_with(shape=[0, 2**62], data=[])), None, "input 'x': 'shape' is too large"),
    (_body(_with(datatype=...)), None, "input 'x': 'datatype' must be one of BOOL, UINT8"),
    (_body(_with(datatype="FLOAT32")), None, "input 'x': 'datatype' must be one of BOOL,"),
    (_body(_with(datatype="BF16")), None, "'datatype' must be one of"),
    (_body(_with(datatype=["FP32"])), None, "'datatype' must be one of"),
    (_body(X, X), None, "input 'x': duplicate input name"),
    (_body(_with(data=["1", "2"])), None, "input 'x': 'data' of a FP32 tensor must hold numbers"),
    (_body(_with(data=[True, False])), None, "input 'x': 'data' of a FP32 tensor must hold numbers"),
    (_body(_with(data=[{"a": 1}, 2])), None, "input 'x': 'data' of a FP32 tensor must hold numbers"),
    (_body(_with(data=[1, None])), None, "input 'x': 'data' of a FP32 tensor must hold numbers"),
    (_body(_with(datatype="INT64", data=[1.5, 2])), None, "input 'x': 'data' of a INT64 tensor must hold integers"),
    (_body(_with(datatype="INT64", data=[1.0, 2.0])), None, "must hold integers"),
    (_body(_with(datatype="INT64", data=[2**63, 1])), None, "input 'x': 'data' is out of range for INT64"),
    (_body(_with(datatype="INT64", data=[2**63, 1.5])), None, "input 'x': 'data' of a INT64 tensor must hold integers"),
    (_body(_with(datatype="UINT64", data=[2**64, 1])), None, "'data' of a UINT64 tensor must hold integers"),  # a float
    (_body(_with(datatype="UINT8", data=[-1, 3])), None, "input 'x': 'data' is out of range for UINT8"),
    (_body(_with(datatype="INT8", data=[127, 128])), None, "out of range for INT8"),
    (_body(_with(datatype="BOOL", data=[1, 0])), None, "input 'x': 'data' of a BOOL tensor must hold true/false"),
    (_body(_with(datatype="BYTES", data=["a", 1])), None, "input 'x': 'data' of a BYTES tensor must hold strings"),
    (_body(_with(datatype="BYTES", data=[["a"], "b"])), None, "input 'x': 'data' of a BYTES tensor must hold strings"),
    (_body(_with(data=[1, 2, 3])), None, "input 'x': 'data' has 3 elements, shape [2] needs 2"),
    (_body(_with(shape=[2, 2], data=[[1, 2], [3]])), None, "input 'x': 'data' is not a flat or rectangular"),
    (_body(_with(datatype="BYTES", data=["a"])), None, "input 'x': 'data' has 1 elements, shape [2] needs 2"),
    (_body(_with(data=5)), None, "input 'x': 'data' must be a list"),
    (_body(_with(data=None)), None, "input 'x': 'data' must be a list"),
    (_body(_with(data=...)), None, "input 'x': needs 'data' or parameters.binary_data_size"),
    (_body(X, id=5), None, "'id' must be a string"),
    (_body(X, parameters=[1]), None, "request: 'parameters' must be an object"),
    (_body(_with(parameters="p")), None, "input 'x': 'parameters' must be an object"),
    (_body(_with(parameters={"binary_data_size": "8"})), None, "input 'x': parameters.binary_data_size must be"),
    (_body(_with(parameters={"binary_data_size": 8})), None, "input 'x': parameters.binary_data_size must be"),
    (_body(_with(parameters={"shared_memory_region": "r"})), None, "input 'x': shared memory"),
    (_body(X, outputs={"name": "y"}), None, "'outputs' must be a list"),
    (_body(X, outputs=[{"name": 1}]), None, "outputs[0]: 'name'"),
    (_body(X, outputs=[{"name": "y"}, {"name": "y"}]), None, "output 'y': requested twice"),
    (
        _body(X, outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
        None,
        "output 'y': parameters.binary_data",
    ),
    (_body(X, outputs=[{"name": "y", "parameters": {"classification": 3}}]), None, "output 'y': shared memory and"),
    (_body(X, parameters={"binary_data_output": 1}), None, "parameters.binary_data_output must be true or false"),
    # binary tensor data
    (*_bin(X, b"\0" * 8), "input 'x': parameters.binary_data_size must be a non-negative integer, with no 'data'"),
    (_X8[:-4], _X8_HEAD, "input 'x': binary_data_size is 8 but only 4 bytes are left in the body"),
    (*_bin(_with(data=...), b"\0" * 4), "input 'x': binary_data_size is 4, shape [2] of FP32 needs 8"),
    (_X8 + b"\0" * 4, _X8_HEAD, "4 unexpected bytes after the binary data of input 'x'"),
    (_body(X) + b"\0", len(_body(X)), "1 unexpected bytes after the JSON header"),
    (_body(X), len(_body(X)) + 1, f"{LENGTH} must be an integer from 0 to the body size"),
    (_body(X), "12a", f"{LENGTH} must be an integer"),
    (_body(X), -1, f"{LENGTH} must be an integer"),
    (_X8, None, f"(a body with binary tensor data needs the {LENGTH} header)"),
    (_X8[:-8], None, "input 'x': binary_data_size is 8 but only 0 bytes are left in the body (a body with binary"),
    (*_bin(_with(datatype="BYTES", data=...), _words + b"\x05\x00\x00\x00abc"), "input 'x': BYTES element 1 runs past"),
    (*_bin(_with(datatype="BYTES", data=...), _words + b"\x01\x00"), "input 'x': BYTES element 1 runs past"),
    (*_bin(_with(datatype="BYTES", data=...), _words + b"\x01\x00\x00\x00\xff"), "BYTES element 1 is not valid UTF-8"),
    (
        *_bin(_with(datatype="BYTES", data=...), _words),
        "input 'x': binary data holds 1 BYTES elements, shape [2] needs",
    ),
    (*_bin(_with(datatype="BYTES", data=...), _words * 3), "input 'x': binary data holds 2+ BYTES elements"),
]


@pytest.mark.parametrize(("body", "header_length", "reason"), ERRORS)
def test_refusals_name_the_field(body, header_length, reason):
    with pytest.raises(ProtocolError, match=re.escape(reason)) as err:
        decode_infer_request(body, header_length)
    assert err.value.status == 400


def test_too_many_elements_is_413():
    body = _body(X, _with(name="y", shape=[1, 2], data=[1, 2]))
    assert decode_infer_request(body, max_elements=4).inputs["y"].shape == (1, 2)
    with pytest.raises(ProtocolError, match="input 'y': the request has more than 3 tensor elements") as err:
        decode_infer_request(body, max_elements=3)
    assert err.value.status == 413
    huge = _body(_with(shape=[10**9, 10**9], data=...)) + b"\0" * 8  # refused before anything is allocated
    with pytest.raises(ProtocolError) as err:
        decode_infer_request(huge, len(huge) - 8, max_elements=10**6)
    assert err.value.status == 413


# ---- nothing but ProtocolError, whatever the bytes ----


def _decodes_or_refuses(body: bytes, header_length=None) -> None:
    try:
        decode_infer_request(body, header_length)
    except ProtocolError as err:
        assert not str(err).startswith("malformed request") and err.status in (400, 413)  # a reason, not the net


def _random_json(rnd: random.Random, depth: int = 0):
    choice = rnd.randrange(9 if depth < 3 else 6)
    simple = [None, True, rnd.randint(-(2**70), 2**70), rnd.random() * 1e6, "FP32", "x", -1, 2**62, [0] * 70]
    if choice < 6:
        return rnd.choice(simple)
    if choice < 8:
        return [_random_json(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {rnd.choice(["name", "shape", "datatype", "data", "parameters"]): _random_json(rnd, depth + 1)}


def test_fuzz_random_and_truncated_bodies():
    rnd = random.Random(0)
    inputs = [
        _input("a", ARRAYS["FP32"][:, :8], True),
        _input("b", ARRAYS["BYTES"], True),
        _input("c", ARRAYS["INT8"], False),
    ]
    body, json_size = Client.generate_request_body(inputs, outputs=[httpclient.InferRequestedOutput("y")])
    assert len(decode_infer_request(body, json_size).inputs) == 3
    for cut in range(len(body)):
        _decodes_or_refuses(body[:cut], min(cut, json_size))
        _decodes_or_refuses(body[:cut])
    for _ in range(1500):
        mutated = bytearray(body)
        for _ in range(rnd.randrange(1, 4)):
            mutated[rnd.randrange(len(body))] = rnd.randrange(256)
        _decodes_or_refuses(bytes(mutated), rnd.choice([json_size, None, str(json_size), rnd.randrange(len(body))]))
        _decodes_or_refuses(rnd.randbytes(rnd.randrange(64)), rnd.choice([None, 0, 3, "x", 10**30]))
    for _ in range(1500):
        spec = {"name": "x", "shape": [2], "datatype": rnd.choice(list(DATATYPES)), "data": [1, 2]}
        spec[rnd.choice(["name", "shape", "datatype", "data", "parameters"])] = _random_json(rnd)
        top = {rnd.choice(["id", "parameters", "outputs", "inputs"]): _random_json(rnd)} if rnd.random() < 0.3 else {}
        _decodes_or_refuses(json.dumps({"inputs": [spec], **top}).encode(), rnd.choice([None, 0]))

"""Drives millrace's Open Inference Protocol (v2) routes with Triton's stock HTTP client.

Usage: oip_client.py HOST:PORT MODEL INPUTS.json
INPUTS.json: {"version": "1", "inputs": [{"name": …, "datatype": …, "values": […]}, …]}
Prints one JSON object: the probabilities of each way of asking, the versions that answered,
the metadata, and the server's reasons for two bad requests.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

addr, model, path = sys.argv[1:4]
with open(path) as f:
    spec = json.load(f)
client = httpclient.InferenceServerClient(url=addr)
assert client.is_server_live(), "not live"
assert client.is_server_ready(), "not ready"
assert client.is_model_ready(model), "the model is not ready"
assert not client.is_model_ready("no-such-model"), "an unknown model is ready"

NUMPY = {"BYTES": np.object_, "FP32": np.float32, "FP64": np.float64, "INT64": np.int64}


def inputs(binary, tensors=None):
    made = []
    for tensor in tensors or spec["inputs"]:
        values = tensor["values"]
        if tensor["datatype"] == "BYTES":
            values = [v.encode() for v in values]
        array = np.array(values, dtype=NUMPY[tensor["datatype"]])
        one = httpclient.InferInput(tensor["name"], list(array.shape), tensor["datatype"])
        one.set_data_from_numpy(array, binary_data=binary)
        made.append(one)
    return made


def answered(result):
    response = result.get_response()
    return result.as_numpy("probability").tolist(), response["model_version"], response["model_name"]


def reason(tensors):
    try:
        client.infer(model, inputs(False, tensors))
    except InferenceServerException as e:
        return e.message()
    sys.exit("a bad request was answered")


as_json = httpclient.InferRequestedOutput("probability", binary_data=False)
out = {}
out["json"] = answered(client.infer(model, inputs(False), outputs=[as_json], request_id="r1"))
# The client's defaults: binary tensors in, the output asked for as binary.
out["binary"] = answered(client.infer(model, inputs(True)))
out["versioned"] = answered(client.infer(model, inputs(True), model_version=spec["version"]))
out["metadata"] = client.get_model_metadata(model)
out["version_metadata"] = client.get_model_metadata(model, model_version=spec["version"])
out["server"] = client.get_server_metadata()
out["unknown_input"] = reason([{"name": "nope", "datatype": "BYTES", "values": ["a"]}])
out["wrong_datatype"] = reason([{"name": "price", "datatype": "BYTES", "values": ["3"]}])
print(json.dumps(out))

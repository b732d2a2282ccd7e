"""Ask a millrace server for predictions with plain `requests`, in both dialects.

Reads the served model's inputs from its metadata, then scores the same instances through
TF Serving's `:predict` and through the Open Inference Protocol's `infer` (a tensor per field),
and checks that both give the same probabilities.

Usage: python predict.py http://127.0.0.1:8080 MODEL [INSTANCES.json]
INSTANCES.json holds a list of objects of field values; without it, one Criteo instance.
"""
import json
import sys

import requests

url, model = sys.argv[1].rstrip("/"), sys.argv[2]
if len(sys.argv) > 3:
    with open(sys.argv[3]) as f:
        instances = json.load(f)
else:
    instances = [{"I1": 3, "I2": 20, "C1": "68fd1e64", "C2": "80e26c9b"}]

# The inputs the model takes: a name and a datatype per schema field.
metadata = requests.get(f"{url}/v2/models/{model}", timeout=10).json()
datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
print(f"model {model}: versions {metadata['versions']}, {len(datatypes)} inputs")

# TF Serving's row form.
answer = requests.post(f"{url}/v1/models/{model}:predict", json={"instances": instances}, timeout=10)
answer.raise_for_status()
rows = answer.json()
print(f":predict  v{rows['model_version']}: {rows['predictions']}")

# The Open Inference Protocol: one tensor per field the instances hold, missing values left out
# of the instances (a tensor holds a value for every instance, so a field some instances lack
# is sent with those instances alone; here every instance holds the same fields).
fields = sorted({name for instance in instances for name in instance})
inputs = []
for name in fields:
    datatype = datatypes[name]
    values = [instance[name] for instance in instances]
    if datatype == "BYTES":
        values = [str(v) for v in values]
    inputs.append({"name": name, "datatype": datatype, "shape": [len(values)], "data": values})
answer = requests.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=10)
answer.raise_for_status()
infer = answer.json()
probabilities = infer["outputs"][0]["data"]
print(f"v2 infer  v{infer['model_version']}: {probabilities}")

if infer["model_version"] == str(rows["model_version"]):
    for a, b in zip(rows["predictions"], probabilities):
        assert abs(a - b) < 1e-6, (rows, infer)
    print("both dialects agree")

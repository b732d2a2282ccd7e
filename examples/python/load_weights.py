"""Load a millrace model version's weights with safetensors and NumPy, without millrace.

A version is a directory of the registry: meta.json (what the model is, what it learned),
weights.safetensors (its tensors; the header's metadata says what they are), chunks.json (the
SHA-256 of each chunk of 16,384 rows, for serving's loads) and, for a FeatureMap model,
featuremap.json (the vocabularies and bucket boundaries).

Usage: python load_weights.py REGISTRY MODEL [VERSION]
"""
import json
import pathlib
import sys

import numpy as np
from safetensors import safe_open

registry, model = pathlib.Path(sys.argv[1]), sys.argv[2]
versions = sorted((registry / model).glob("v*"))
if not versions:
    sys.exit(f"no versions of {model} in {registry}")
version = registry / model / f"v{int(sys.argv[3]):010d}" if len(sys.argv) > 3 else versions[-1]

meta = json.loads((version / "meta.json").read_text())
print(f"{model} v{meta['version']}: {meta['architecture']}, trained on {meta['trained_events']} events, progressive AUC {meta['progressive_auc']}")
with safe_open(version / "weights.safetensors", framework="numpy") as weights:
    header = weights.metadata()
    print(f"header: {header}")
    assert header["model"] == model and header["version"] == str(meta["version"]), header
    for name in weights.keys():
        tensor = weights.get_tensor(name)
        print(f"  {name}: {tensor.dtype} {list(tensor.shape)}, {np.count_nonzero(tensor)} non-zero, |w| max {np.abs(tensor).max():.4f}")

"""Checks the job file's JSON Schema with the `jsonschema` package (draft 2020-12): the schema is
valid, every job file given is valid against it, and a job file with an unknown key, a wrong
type and an unknown source type is not, each reported.

Usage: job_schema_check.py SCHEMA.json JOB.toml...
"""

import json
import sys
import tomllib

from jsonschema import Draft202012Validator

WRONG = """
name = "wrong"
nmae = "typo"

[source]
type = "kafak"
topic = "events"

[features]
type = "hashed"
hash_bits = "twenty"

[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 1.0
l2 = 1.0

[publish]
registry = "/tmp/registry"
"""


def errors(validator, document):
    return sorted(
        "/".join(str(p) for p in e.absolute_path) or "(top)"
        for e in validator.iter_errors(document)
    )


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    failed = False
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            found = errors(validator, tomllib.load(f))
        if found:
            print(f"{path}: not valid against the schema at {found}")
            failed = True
    found = errors(validator, tomllib.loads(WRONG))
    for place in ["(top)", "source", "features"]:
        if place not in found:
            print(f"the wrong job file passes at {place}: {found}")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

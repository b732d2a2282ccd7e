#!/usr/bin/env python3
"""Vowpal Wabbit's and River's online logistic regression on one file, split as
`millrace bench online --holdout H` splits it: train in order on the first lines, score the
rest. One JSON line per tool, in the fields `bench online` prints.

`--format criteo`: both learners see the features of millrace's hashed spec: each integer field
is a token of its value (itself up to 2, else floor(ln(v)^2), "NA" when empty), each
categorical field a token of its text. `--format avazu`: a token per column but `id`, `click`
and `hour` (the columns the job file reads as features). `--format movielens`: the user and
the item, positive at a rating of 4 or more. `--format frappe`: a token per libFM index. VW hashes them into 2^24 slots, one pass, logistic loss; River learns a
`linear_model.LogisticRegression` with its defaults on one-hot dicts. `seconds` is the training
pass alone (the file is converted before the clock starts); `rows_per_sec` counts training rows.

Run by perf/compare.sh, which installs both from PyPI into a venv.
"""

import argparse
import json
import math
import os
import tempfile
import time


def tokens(fields):
    """The 39 feature tokens of one event."""
    out = []
    for i, value in enumerate(fields[:13]):
        if value == "":
            token = "NA"
        else:
            try:
                x = int(value)
            except ValueError:
                token = "BAD"
            else:
                token = str(x) if x <= 2 else "b%d" % int(math.log(x) ** 2)
        out.append("I%d_%s" % (i + 1, token))
    for i, value in enumerate(fields[13:39]):
        out.append("C%d_%s" % (i + 1, value or "NA"))
    return out


def criteo_row(line, header):
    fields = line.split("\t")
    if len(fields) != 40 or fields[0] not in ("0", "1"):
        return None
    return fields[0] == "1", tokens(fields[1:])


def avazu_row(line, header):
    fields = line.split(",")
    if len(fields) != len(header) or fields[1] not in ("0", "1"):
        return None
    toks = ["%s_%s" % (n, v) for n, v in zip(header, fields) if n not in ("id", "click", "hour")]
    return fields[1] == "1", toks


def movielens_row(line, header):
    fields = line.split("\t")
    try:
        rating = float(fields[2])
    except (IndexError, ValueError):
        return None
    return rating >= 4.0, ["u_" + fields[0], "i_" + fields[1]]


def frappe_row(line, header):
    parts = line.split()
    if not parts or parts[0] not in ("1", "+1", "-1", "0"):
        return None
    return parts[0] in ("1", "+1"), ["f_" + p.split(":")[0] for p in parts[1:]]


# Per format: how a line reads, and the delimiter of its header line (None: no header).
READERS = {
    "criteo": (criteo_row, None),
    "avazu": (avazu_row, ","),
    "movielens": (movielens_row, "\t"),
    "frappe": (frappe_row, None),
}


def read(path, holdout, fmt="criteo"):
    """(train, test): lists of (label, tokens), split by line as `bench online` splits (a
    header line first is not a data line)."""
    row, delimiter = READERS[fmt]
    with open(path, "rb") as f:
        lines = [line.rstrip(b"\r").decode("utf-8", "replace") for line in f.read().split(b"\n") if line.strip()]
    header = lines.pop(0).split(delimiter) if delimiter else None
    split = round(len(lines) * (1.0 - holdout))
    parts = ([], [])
    for i, line in enumerate(lines):
        parsed = row(line, header)
        if parsed is not None:
            parts[0 if i < split else 1].append(parsed)
    return parts


def auc(scores, labels):
    """The exact AUC, ties counted as half."""
    pairs = sorted(zip(scores, labels))
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2.0
        rank_sum += average_rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def logloss(scores, labels):
    eps = 1e-7
    total = 0.0
    for p, y in zip(scores, labels):
        p = min(max(p, eps), 1.0 - eps)
        total -= math.log(p if y else 1.0 - p)
    return total / len(labels)


def figures(tool, train, seconds, scores, labels):
    return {
        "tool": tool,
        "rows": len(train) + len(labels),
        "seconds": seconds,
        "rows_per_sec": len(train) / seconds,
        "holdout_auc": auc(scores, labels),
        "holdout_logloss": logloss(scores, labels),
    }


def vw(train, test, bits):
    from vowpalwabbit import Workspace

    work = tempfile.mkdtemp()
    paths = {name: os.path.join(work, name) for name in ("train.vw", "test.vw", "model", "p")}
    for name, rows in (("train.vw", train), ("test.vw", test)):
        with open(paths[name], "w") as f:
            for label, toks in rows:
                f.write("%d |f %s\n" % (1 if label else -1, " ".join(toks)))
    # With `-d`, the Workspace runs the whole pass over the file when it is made (as the `vw`
    # command does); `finish` writes the model.
    started = time.perf_counter()
    learner = Workspace(
        "-d %s --loss_function logistic -b %d -f %s --quiet"
        % (paths["train.vw"], bits, paths["model"])
    )
    learner.finish()
    seconds = time.perf_counter() - started
    scorer = Workspace(
        "-t -i %s -d %s -p %s --link logistic --quiet"
        % (paths["model"], paths["test.vw"], paths["p"])
    )
    scorer.finish()
    with open(paths["p"]) as f:
        scores = [float(line.split()[0]) for line in f if line.strip()]
    return figures("vw -b %d" % bits, train, seconds, scores, [y for y, _ in test])


def river(train, test):
    from river import linear_model

    model = linear_model.LogisticRegression()
    started = time.perf_counter()
    for label, toks in train:
        model.learn_one(dict.fromkeys(toks, 1.0), label)
    seconds = time.perf_counter() - started
    scores = [model.predict_proba_one(dict.fromkeys(toks, 1.0))[True] for _, toks in test]
    return figures("river LogisticRegression", train, seconds, scores, [y for y, _ in test])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--bits", type=int, default=24)
    parser.add_argument("--tools", default="vw,river")
    parser.add_argument("--format", default="criteo", choices=sorted(READERS))
    args = parser.parse_args()
    train, test = read(args.input, args.holdout, args.format)
    for tool in args.tools.split(","):
        result = vw(train, test, args.bits) if tool == "vw" else river(train, test)
        result["input"] = args.input
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

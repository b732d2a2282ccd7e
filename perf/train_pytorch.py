"""The peer of `millrace bench train`: the same DeepFM or DCN-v2 (same fields, sizes,
initialization, optimizer, batch and row order) in PyTorch eager, trained on the rows that
`millrace bench train --samples DIR` wrote (`train.arrow`, `holdout.arrow`), from the initial
weights it wrote (`init.npz`, by this model's `state_dict` names), scored on the held-out ones. Prints one JSON line with the bench's keys. The clock covers training only
(batches made from the flat arrays, forward, backward, Adam), as the bench's does.

    python perf/train_pytorch.py --samples DIR --model deepfm --batch 2048
"""

import argparse
import json
import time

import numpy as np
import pyarrow.ipc as ipc
import torch
import torch.nn.functional as F


def load(path):
    """Flat arrays of a sample file: labels, row offsets, slots, values, fields; the features."""
    table = ipc.open_file(path).read_all()
    layout = json.loads(table.schema.metadata[b"millrace.fields"])
    fields = table.column("fields").combine_chunks()
    offsets = fields.offsets.to_numpy().astype(np.int64)
    field = fields.flatten().to_numpy().astype(np.int64)
    ids = table.column("ids").combine_chunks().flatten().to_numpy().astype(np.int64)
    values = table.column("values").combine_chunks().flatten().to_numpy().astype(np.float32)
    first = np.array([f["offset"] for f in layout], dtype=np.int64)
    labels = np.array(table.column("label").to_pylist(), dtype=np.float32)
    return labels, offsets - offsets[0], first[field] + ids, values, field, layout


class Deep(torch.nn.Module):
    def __init__(self, kind, layout, dim, mlp, cross_layers):
        super().__init__()
        self.kind, self.fields, self.dim = kind, len(layout), dim
        slots = max(f["offset"] + f["width"] for f in layout)
        self.embedding = torch.nn.Embedding(slots, dim)
        torch.nn.init.normal_(self.embedding.weight, 0.0, 0.01)
        width = self.fields * dim
        if kind == "deepfm":
            self.linear = torch.nn.Embedding(slots, 1)
            torch.nn.init.zeros_(self.linear.weight)
        self.cross = torch.nn.ModuleList(
            [torch.nn.Linear(width, width) for _ in range(cross_layers if kind == "dcnv2" else 0)]
        )
        layers, size = [], width
        for w in mlp:
            layers += [torch.nn.Linear(size, w), torch.nn.ReLU()]
            size = w
        self.mlp = torch.nn.Sequential(*layers)
        self.out = torch.nn.Linear(size, 1)

    def forward(self, slots, values, row, cell, rows):
        entries = self.embedding(slots) * values.unsqueeze(1)
        device = entries.device
        cells = torch.zeros(rows * self.fields, self.dim, device=device).index_add(0, cell, entries)
        x0 = cells.view(rows, self.fields * self.dim)
        if self.kind == "deepfm":
            weighted = self.linear(slots).squeeze(1) * values
            first = torch.zeros(rows, device=device).index_add(0, row, weighted)
            per_field = cells.view(rows, self.fields, self.dim)
            fm = 0.5 * (per_field.sum(1).square() - per_field.square().sum(1)).sum(1)
            return first + fm + self.out(self.mlp(x0)).squeeze(1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.out(self.mlp(x)).squeeze(1)


def batches(data, size, device):
    labels, offsets, slots, values, field, layout = data
    n, count = len(labels), len(layout)
    for s in range(0, n, size):
        e = min(s + size, n)
        a, b = offsets[s], offsets[e]
        per_row = torch.from_numpy(np.diff(offsets[s : e + 1]))
        row = torch.repeat_interleave(torch.arange(e - s), per_row)
        cell = row * count + torch.from_numpy(field[a:b])
        yield (
            torch.from_numpy(slots[a:b]).to(device),
            torch.from_numpy(values[a:b]).to(device),
            row.to(device),
            cell.to(device),
            e - s,
            torch.from_numpy(labels[s:e]).to(device),
        )


def auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    pos = labels.sum()
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", required=True)
    p.add_argument("--model", default="deepfm", choices=["deepfm", "dcnv2"])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--mlp", default="64,32")
    p.add_argument("--cross-layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (fp16 autocast, GradScaler)")
    p.add_argument("--fused", action="store_true", help="Adam's fused kernel (one pass per element)")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise SystemExit("--device cuda: this machine has no CUDA device")
    device = torch.device("cuda" if cuda else "cpu")
    train = load(f"{args.samples}/train.arrow")
    holdout = load(f"{args.samples}/holdout.arrow")
    mlp = [int(w) for w in args.mlp.split(",") if w]
    model = Deep(args.model, train[5], args.embedding_dim, mlp, args.cross_layers).to(device)
    init = np.load(f"{args.samples}/init.npz")
    model.load_state_dict({name: torch.from_numpy(init[name]) for name in init.files})
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=args.fused or None)
    amp = args.amp and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    started = time.perf_counter()
    for _ in range(args.passes):
        for slots, values, row, cell, rows, labels in batches(train, args.batch, device):
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                logits = model(slots, values, row, cell, rows)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    scores = []
    with torch.no_grad():
        for slots, values, row, cell, rows, _ in batches(holdout, max(args.batch, 4096), device):
            scores.append(torch.sigmoid(model(slots, values, row, cell, rows)).cpu().numpy())
    scores = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    labels = holdout[0]
    clipped = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    logloss = float(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).mean())
    print(
        json.dumps(
            {
                "samples_per_sec": len(train[0]) * args.passes / seconds,
                "device": "cuda:0" if cuda else "cpu",
                "model": args.model,
                "batch": args.batch,
                "holdout_auc": auc(scores, labels),
                "holdout_logloss": logloss,
                "train_rows": len(train[0]),
                "holdout_rows": len(labels),
                "seconds": seconds,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "mixed_precision": amp,
                "fused_adam": args.fused,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Train a frozen-encoder checkpoint for the feature-level truth runs: a small net (Conv-4 by default)
with a 64-way cross-entropy head on the pooled-train images of mini-ImageNet's 64 meta-train classes
(the pooled test images are never seen), then save the net without its head for `--set weights=PATH`.

    python benchmarks/train_base_encoder.py --data-root ../shared/data --cache-dir /tmp/cache \\
        --epochs 4 --image-size 32 --out conv4-32px-base64.pt

The kv-bottleneck / linear-probe / nmc rows on split-miniimagenet in leaderboard/leaderboard.csv used a
checkpoint trained this way (same data, steps, schedule and seed; their `weights` column holds the
file's SHA-256 prefix, which a re-run on the same CPU build should reproduce).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clbench.augment import ImageTransform
from clbench.backbones import make_backbone
from clbench.datasets import load_dataset
from clbench.protocols.repartition import pooled_split

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--backbone", default="conv4")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    raw = load_dataset("mini-imagenet", args.data_root, args.cache_dir)
    base = sorted(set(raw.partition("train").labels.tolist()))  # the 64 meta-train classes
    pooled = pooled_split(raw).partition("train")
    keep = np.isin(pooled.labels, base)
    images, labels = torch.as_tensor(np.asarray(pooled.images)[keep]), torch.as_tensor(pooled.labels[keep])
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(base)] = torch.arange(len(base))
    targets = remap[labels]
    print(f"{len(base)} base classes, {len(targets)} pooled-train images", flush=True)

    transform = ImageTransform(args.image_size, IMAGENET_MEAN, IMAGENET_STD)
    net = make_backbone(args.backbone, (3, args.image_size, args.image_size))
    head = nn.Linear(net.out_dim, len(base))
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * ((len(targets) + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    generator, start = torch.Generator().manual_seed(0), time.time()
    for epoch in range(args.epochs):
        net.train()
        correct = 0
        for batch in torch.randperm(len(targets), generator=generator).split(128):
            x = transform(images[batch])
            x = torch.where(torch.rand(len(batch), 1, 1, 1, generator=generator) < 0.5, x.flip(3), x)  # h-flip
            logits = head(net(x))
            loss = F.cross_entropy(logits, targets[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            correct += int((logits.argmax(1) == targets[batch]).sum())
        print(f"epoch {epoch + 1}: train accuracy {100 * correct / len(targets):.1f}%, {time.time() - start:.0f} s",
              flush=True)
    torch.save(net.state_dict(), args.out)
    print("saved", args.out)


if __name__ == "__main__":
    main()

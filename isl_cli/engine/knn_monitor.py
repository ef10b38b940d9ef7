"""The kNN accuracy watched during train-features: it drives the LR plateau scheduler."""

from __future__ import annotations

from typing import Any

import torch

from isl_cli.data.store import Split
from isl_cli.engine.embedding import embed
from isl_cli.engine.progress import log
from isl_cli.engine.state import generator_for
from isl_cli.knn import weighted_knn


class KnnMonitor:
    """kNN during training: test split (the reference) or a fraction of the training images as queries (still
    trained on; only their labels leave the kNN keys)."""

    def __init__(self, state: Any, train: Split, test: Split, device: torch.device):
        self.state, self.train, self.test, self.device = state, train, test, device
        cfg = state.cfg
        self.mode = "val" if cfg.val_split > 0 else "test"
        self.labels = train.labels.to(device)
        self.warned = False
        if self.mode == "val":
            perm = torch.randperm(len(train), generator=generator_for(cfg.seed, "val-split"))
            count = max(1, int(round(cfg.val_split * len(train))))
            self.queries = perm[:count].sort().values
            keep = torch.ones(len(train), dtype=torch.bool)
            keep[self.queries] = False
            self.keys = keep.nonzero().squeeze(1).to(device)
        self.can_score = train.labelled and (self.mode == "val" or (len(test) > 0 and test.labelled))

    def evaluate(self) -> dict[str, Any] | None:
        if not self.can_score:
            if not self.warned:
                log("[yellow]no labels: kNN accuracy cannot be scored, so the LR scheduler never steps[/yellow]")
                self.warned = True
            return None
        cfg, state = self.state.cfg, self.state
        memory = state.bank.memory
        if self.mode == "val":
            queries = embed(state.model, self.train, state.spec, device=self.device, batch_size=256,
                            num_workers=cfg.num_workers, subset=self.queries, precision=state.precision)
            query_labels = self.labels[self.queries.to(self.device)]
            keys, key_labels = memory[self.keys], self.labels[self.keys]
        else:
            queries = embed(state.model, self.test, state.spec, device=self.device, batch_size=256,
                            num_workers=cfg.num_workers, precision=state.precision)
            query_labels = self.test.labels.to(self.device)
            keys, key_labels = memory, self.labels
        k = min(cfg.eval_k, len(keys))
        result = weighted_knn(queries, query_labels, keys, key_labels, [k], cfg.temperature,
                              num_classes=int(self.labels.max()) + 1)[k]
        return {"knn_top1": result.top1, "knn_top5": result.top5, "knn_k": k, "knn_on": self.mode}

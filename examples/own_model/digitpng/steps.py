"""A training step of your own: batches of dicts in, the loss and metrics of your choosing out."""

from __future__ import annotations

import torch


def classify(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on batch["image"] -> batch["label"]; also the batch's accuracy and mean confidence.

    The orchestrator logs the metrics as train/<name> (averaged between log steps) and eval/<name>.
    """
    logits = model(batch["image"])
    loss = torch.nn.functional.cross_entropy(logits, batch["label"])
    with torch.no_grad():
        probabilities = logits.softmax(dim=-1)
        metrics = {
            "accuracy": (logits.argmax(dim=-1) == batch["label"]).float().mean(),
            "confidence": probabilities.max(dim=-1).values.mean(),
        }
    return loss, metrics

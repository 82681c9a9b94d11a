"""The MLM model's own masked-token accuracy on the monitor's probe (issue 17).

The monitor's MLM probe (``lightning_ssb.callbacks.probe``) holds fixed, seeded masks; its examples are
the positions whose input is ``[MASK]`` and whose original token is one of the probe's K classes.
``probe_accuracy`` asks the model itself to fill those very positions and scores it three ways:

- ``restricted``: the argmax of the MLM logits over the K class tokens only (the question the
  monitor's read-outs answer: which of the K labels);
- ``full``: the argmax over the whole vocabulary (for information: a stricter score);
- ``majority``: the share of the most frequent class among the scored examples, i.e. the accuracy of
  always answering that class (the floor a read-out reaches without learning anything).

``ProbeAccuracy`` is a callback that logs these on probe-test before training and after every epoch
(``probe/restricted_acc``, ``probe/full_acc``, ``probe/majority``, ``probe/n``), building the probe
exactly as ``SSBMonitor`` does from the same ``ProbeConfig``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssb.callbacks.probe import ProbeConfig, ProbeSet


@dataclass(frozen=True)
class ProbeScore:
    """The model's accuracy on one split of an MLM probe (see the module docstring)."""

    n: int
    """Scored examples ([MASK] positions whose original token is one of the K classes)."""
    restricted: float
    """Accuracy of the argmax over the K class tokens' logits."""
    full: float
    """Accuracy of the argmax over the whole vocabulary."""
    majority: float
    """Share of the most frequent class among the n examples."""
    majority_label: int
    """That class (an index into the probe's classes)."""

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def probe_predictions(model, probe: ProbeSet, split: str = "test", device: torch.device | str | None = None,
                      autocast=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's predictions at the probe's examples of ``split`` ("train" or "test").

    Args:
        model: a Hugging Face ``BertForMaskedLM`` (e.g. ``MLMModule.model``).
        probe: an MLM probe set (``ProbeConfig.build(datamodule, "mlm")``).
        device: where the forward passes run (default: the model's).
        autocast: optional context-manager factory (e.g. the trainer's precision context).

    Returns:
        ``(restricted [n], full [n], labels [n])`` on the CPU: the class index of the argmax over the K
        class tokens, the vocabulary id of the argmax over all tokens, and the probe's class labels.
    """
    if probe.task != "mlm" or not probe.class_ids:
        raise ValueError(f"probe_accuracy needs an MLM probe with class_ids, got task {probe.task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    device = device if device is not None else next(model.parameters()).device
    class_ids = torch.tensor(probe.class_ids, dtype=torch.long, device=device)
    batches = probe.test_batches if split == "test" else probe.train_batches
    was_training = model.training
    model.eval()
    restricted, full, labels = [], [], []
    try:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.inputs.items()}
            with (autocast or contextlib.nullcontext)():
                hidden = model.bert(**inputs).last_hidden_state
            at = hidden[batch.rows.to(device), batch.positions.to(device)]  # [n, D]
            logits = model.cls(at).float()  # [n, V]: the MLM head at the probe's positions only
            restricted.append(logits[:, class_ids].argmax(-1).cpu())
            full.append(logits.argmax(-1).cpu())
            labels.append(batch.labels)
    finally:
        model.train(was_training)
    if not labels:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    return torch.cat(restricted), torch.cat(full), torch.cat(labels)


def probe_accuracy(model, probe: ProbeSet, split: str = "test", device: torch.device | str | None = None,
                   autocast=None) -> ProbeScore:
    """The model's own masked-token accuracy on the probe's ``split`` (see the module docstring)."""
    restricted, full, labels = probe_predictions(model, probe, split, device, autocast)
    n = int(labels.numel())
    if n == 0:
        raise ValueError(f"the probe's {split} split has no example: increase probe.{split}_size")
    counts = torch.bincount(labels, minlength=probe.num_classes)
    token_of_class = torch.tensor(probe.class_ids, dtype=torch.long)
    return ProbeScore(
        n=n,
        restricted=float((restricted == labels).float().mean()),
        full=float((full == token_of_class[labels]).float().mean()),
        majority=float(counts.max()) / n,
        majority_label=int(counts.argmax()),
    )


class ProbeAccuracy(Callback):
    """Log the MLM model's own accuracy on the monitor's probe before training and after every epoch.

    Args:
        probe: the probe (give it the same settings as ``SSBMonitor``'s ``probe`` so both score the
            same positions and labels).
        every_n_epochs: score after every n-th epoch (the state before training is always scored).
        prefix: first segment of the logged keys.
    """

    def __init__(self, probe: ProbeConfig = ProbeConfig(), every_n_epochs: int = 1,  # noqa: B008
                 prefix: str = "probe") -> None:
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"ProbeAccuracy.every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.probe_config, self.every_n_epochs, self.prefix = probe, every_n_epochs, prefix
        self.probe: ProbeSet | None = None
        self.history: list[dict] = []  # one entry per scored epoch (-1: before training)

    def check(self, pl_module: pl.LightningModule, datamodule) -> None:
        """The CLI calls this before any logger run exists."""
        task = getattr(pl_module, "task", None)
        if task != "mlm" or not hasattr(getattr(pl_module, "model", None), "cls"):
            raise ValueError(f"ProbeAccuracy needs an MLM module (lightning_ssb.models.MLMModule), got task {task!r}")
        self.probe_config.rule_for("mlm")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(pl_module, trainer.datamodule)
        if self.probe is None:
            self.probe = self.probe_config.build(trainer.datamodule, "mlm")
        if trainer.global_step == 0 and not any(h["epoch"] == -1 for h in self.history):
            self._score(trainer, pl_module, -1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._score(trainer, pl_module, trainer.current_epoch)

    def _score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        start = time.perf_counter()
        ctx = getattr(trainer.precision_plugin, "forward_context", None)
        score = probe_accuracy(pl_module.model, self.probe, "test", pl_module.device, ctx)
        entry = {"epoch": epoch, "step": trainer.global_step, **score.as_dict(),
                 "seconds": time.perf_counter() - start}
        self.history.append(entry)
        metrics = {f"{self.prefix}/{k}": float(v) for k, v in
                   (("restricted_acc", score.restricted), ("full_acc", score.full), ("majority", score.majority),
                    ("n", score.n), ("epoch", epoch))}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
            name = self.probe.label_names[score.majority_label]
            print(f"lightning_ssb: probe accuracy after epoch {epoch}: {score.restricted:.3f} over the "
                  f"{self.probe.num_classes} probe tokens ({score.restricted / score.majority:.2f}x the majority "
                  f"rate {score.majority:.3f} of {name!r}), {score.full:.3f} over the vocabulary, "
                  f"n = {score.n}", flush=True)

    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]

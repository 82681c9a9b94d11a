"""The README's custom analysis runs inside a fit; its scalars and figure reach the sinks; YAML builds it."""

import json
import os

import lightning as L
import pytest
import torch

# --- the README example, verbatim ---------------------------------------------------------------
from lightning_ssb.callbacks import EpochSnapshot, NodalAnalysis
from lightning_ssb.callbacks.figures import new_figure


class UniqueHeads(NodalAnalysis):
    """Per layer: how many heads learned a label that no other head of the layer learned."""

    def __init__(self, min_accuracy: float = 0.0) -> None:
        super().__init__(name="unique_heads")
        self.min_accuracy = min_accuracy

    def analyze(self, snap: EpochSnapshot) -> dict:
        out, counts = {}, []
        for name, site in snap.results.items():      # "blocks.{l}.attn.heads" -> SiteAnalysis
            if site.head_labels is None:              # granularities without "head"
                continue
            labels = site.head_labels                 # [H, K] bool: the learned label sets L_h
            unique = labels & (labels.sum(0) == 1)    # labels that only this head learned
            good = site.head_accuracy >= self.min_accuracy
            counts.append(float((unique.any(1) & good).sum()))
            out[f"{name}/count"] = counts[-1]
        fig = new_figure(5, 3)
        fig.subplots().bar(range(len(counts)), counts)
        out["per_layer"] = fig                        # a matplotlib figure is logged as an image
        return out
# -------------------------------------------------------------------------------------------------

from lightning_ssb.analysis import AnalysisConfig  # noqa: E402
from lightning_ssb.callbacks import ProbeConfig, SSBMonitor  # noqa: E402
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis  # noqa: E402


def test_custom_analysis_logged_through_the_sinks(tmp_path):
    L.seed_everything(0)
    monitor = SSBMonitor(layers=[0, 1], analyses=[UniqueHeads()], dirpath=str(tmp_path / "ssb"), figures=False,
                         table=False, background=True, probe=ProbeConfig(train_size=48, test_size=None, batch_size=16),
                         analysis=fast_analysis(crossover_sizes=[]), report=False)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[monitor],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(ToyTask("classification", lr=1e-2), ToyClassificationData())
    for epoch in ("reference", "epoch_000"):
        folder = tmp_path / "ssb" / epoch
        scalars = json.loads((folder / "scalars.json").read_text())
        arrays = torch.load(folder / "arrays.pt")
        for layer in (0, 1):
            labels = arrays[f"blocks.{layer}.attn.heads/shared/head/labels"]
            expected = float((labels & (labels.sum(0) == 1)).any(1).sum())
            assert scalars[f"ssb/unique_heads/blocks.{layer}.attn.heads/count"] == expected
        assert os.path.getsize(folder / "ssb__unique_heads__per_layer.png") > 1000


def test_monitor_and_custom_analysis_from_yaml():
    """The YAML shape of the README builds the monitor (jsonargparse, as the CLI does)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SSBMonitor, "monitor")
    cfg = parser.parse_string("""
monitor:
  layers: [0, 1]
  sites: [attn.heads, output]
  every_n_epochs: 2
  probe:
    train_size: 100
    top_k_tokens: all
  analysis:
    theta: 0.25
    crossover_sizes: [1, 2, 4]
  analyses:
    - class_path: tests.callbacks.test_custom.UniqueHeads
      init_args: {min_accuracy: 0.1}
""")
    monitor = parser.instantiate_classes(cfg).monitor
    assert monitor.layers == [0, 1] and monitor.every_n_epochs == 2
    assert monitor.probe_config == ProbeConfig(train_size=100, top_k_tokens="all")  # the rest: defaults
    assert monitor.analysis == AnalysisConfig(theta=0.25, crossover_sizes=[1, 2, 4])
    assert isinstance(monitor.analyses[0], UniqueHeads) and monitor.analyses[0].min_accuracy == 0.1
    help_text = parser.format_help()
    assert "--monitor.probe.train_size" in help_text and "--monitor.analysis.theta" in help_text  # nested groups
    with pytest.raises(Exception, match="theta"):  # validated once, by AnalysisConfig itself
        parser.instantiate_classes(parser.parse_string("monitor:\n  analysis:\n    theta: 1.5\n"))

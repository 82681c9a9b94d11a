"""Custom analyses are as first-class as the built-ins: they see both read-out families, return scalars,
per-unit arrays and figures through one typed result, get a report section, and a name that would collide
with a built-in key is refused in one line."""

import json

import lightning as L
import pytest
import torch

from lightning_ssb.callbacks import AnalysisOutput, NodalAnalysis, ProbeConfig, SSBMonitor
from lightning_ssb.plots import new_figure
from lightning_ssb.results.build import AnalysisOutput as BuildOutput
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis


class FamilyGap(NodalAnalysis):
    """Per site: the own read-out's node accuracies minus the shared read-out's (a per-node array), their
    mean (a scalar) and a histogram (a figure)."""

    def __init__(self) -> None:
        super().__init__(name="family_gap")
        self.seen: list[dict] = []

    def analyze(self, snap) -> AnalysisOutput:
        out = AnalysisOutput()
        self.seen.append({site: sorted(fams) for site, fams in snap.families.items()})
        for site, fams in snap.families.items():
            gap = (fams["own"].node_accuracy - fams["shared"].node_accuracy).flatten()
            out.arrays[f"{site}/gap"] = gap
            out.scalars[f"{site}/mean_gap"] = float(gap.mean())
        fig = new_figure(4, 3)
        fig.subplots().hist(torch.cat(list(out.arrays.values())).numpy(), bins=10)
        out.figures["histogram"] = fig
        return out


def test_a_custom_analysis_sees_both_families_and_reaches_disk_and_report(tmp_path):
    L.seed_everything(0)
    gap = FamilyGap()
    monitor = SSBMonitor(layers=[0, 1], analyses=[gap], dirpath=str(tmp_path / "ssb"), figures=False,
                         background=False, probe=ProbeConfig(train_size=48, test_size=None, batch_size=16),
                         analysis=fast_analysis(readout="both", crossover_sizes=[]), sensitivity=False, report=True)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[monitor], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(ToyTask("classification", lr=1e-2), ToyClassificationData())
    sites = ["blocks.0.attn.heads", "blocks.1.attn.heads"]
    assert gap.seen == [{s: ["own", "shared"] for s in sites}] * 2  # the reference and epoch 0
    page = (tmp_path / "ssb" / "report.html").read_text()
    assert "Custom analyses" in page and "family_gap" in page
    for state in ("reference", "epoch_000"):
        folder = tmp_path / "ssb" / state
        arrays = torch.load(folder / "arrays.pt")
        scalars = json.loads((folder / "scalars.json").read_text())
        for site in sites:
            own = arrays[f"{site}/own/node/accuracy"]
            shared = arrays[f"{site}/shared/node/accuracy"]
            torch.testing.assert_close(arrays[f"family_gap/{site}/gap"], (own - shared).flatten())
            mean = float((own - shared).mean())
            assert scalars[f"ssb/family_gap/{site}/mean_gap"] == pytest.approx(mean, abs=1e-12)
            assert f"{mean:.3g}" in page  # the report's table of the analysis' scalars
        assert (folder / "ssb__family_gap__histogram.png").stat().st_size > 1000
    nodes = arrays["blocks.0.attn.heads/own/node/accuracy"].numel()
    assert f"blocks.0.attn.heads/gap [{nodes}]" in page  # the arrays it saved, with their shapes
    assert "family_gap: histogram, epoch 0" in page  # the last state's figure, embedded


@pytest.mark.parametrize("name", ["heads", "epoch", "analysis_seconds", "nodes", "report", "blocks.3.attn.heads",
                                  "a/b", "has.dot", "1st"])
def test_a_name_that_collides_with_a_builtin_is_refused(name):
    class Named(NodalAnalysis):
        def analyze(self, snap):
            return {}

    with pytest.raises(ValueError, match="custom analysis"):
        Named(name=name)


def test_two_analyses_with_one_name_are_refused():
    class A(NodalAnalysis):
        def analyze(self, snap):
            return {}

    with pytest.raises(ValueError, match=r"two analyses named \['same'\]"):
        SSBMonitor(analyses=[A("same"), A("same")])


def test_a_dict_result_is_read_as_the_typed_one():
    fig = new_figure(2, 2)
    out = BuildOutput.of({"n": 3, "one": torch.tensor([0.5]), "per_node": torch.arange(4.0), "fig": fig}, "x")
    assert out.scalars == {"n": 3.0, "one": 0.5}
    assert list(out.arrays) == ["per_node"] and out.figures == {"fig": fig}
    with pytest.raises(TypeError, match="custom analysis 'x': 'bad' is a str"):
        BuildOutput.of({"bad": "text"}, "x")

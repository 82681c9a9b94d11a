"""results/build.py without Lightning: a snapshot becomes the full, pinned set of logged keys."""

import math

import torch

from lightning_ssb.analysis import AnalysisConfig, Penalties, analyze_all, sensitivity
from lightning_ssb.callbacks.custom import NodalAnalysis
from lightning_ssb.results.build import AnalysisPlan, EpochSnapshot, PenaltyBook, build_result
from lightning_ssb.results.keys import parse_key

SITE = "blocks.0.attn.heads"
UNIT_STATS = ["acc_max", "acc_mean", "cluster_count", "cluster_noise", "cluster_size", "coverage", "live",
              "live_fraction", "mean_labels", "overlap", "phi"]
NODE_ONLY = ["hull_bound", "hull_labels", "hull_labels_all", "hull_tightness", "hull_violations"]

# every key a run with one site (2 heads of 2 nodes), both families and both nulls logs: written out
PINNED = sorted(
    ["ssb/epoch", "ssb/analysis_seconds", "ssb/count_live/n"]
    + [f"ssb/{SITE}/shared/site/{s}" for s in ("acc", "l2", "fit_unconverged", "fit_grad_max")]
    + [f"ssb/{SITE}/own/site/{s}" for s in ("fit_unconverged", "fit_grad_max")]
    + [f"ssb/{SITE}/own/{g}/l2" for g in ("node", "head")]
    + [f"ssb/{SITE}/{family}{null}/{g}/{stat}"
       for family in ("own", "shared") for null in ("", "/null_train", "/null_both")
       for g, stats in (("node", UNIT_STATS + NODE_ONLY), ("head", UNIT_STATS)) for stat in stats])


def snapshot(epoch=-1):
    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.arange(30) % 3, torch.arange(15) % 3
    x_train, x_test = torch.randn(30, 2, 2, generator=g), torch.randn(15, 2, 2, generator=g)
    x_train[:, 0, 0] += 3 * y_train  # node 0 of head 0 carries the label
    x_test[:, 0, 0] += 3 * y_test
    return EpochSnapshot(epoch, 7, {SITE: x_train}, {SITE: x_test}, y_train, y_test, 3, ["a", "b", "c"])


class CountLive(NodalAnalysis):
    def __init__(self):
        super().__init__(name="count_live")

    def analyze(self, snap):
        return {"n": float(snap.results[SITE].node_labels.any(1).sum())}


def test_the_full_key_list_of_a_tiny_run_is_pinned():
    plan = AnalysisPlan(nulls=["train", "both"], sensitivity=[SITE])
    result = build_result(snapshot(), AnalysisConfig(crossover_sizes=[1, 2], sensitivity_grid=[1e-2, 1.0]),
                          analyses=[CountLive()], figures=False, plan=plan)
    assert sorted(result.scalars) == PINNED
    assert len(PINNED) == 3 + 8 + 2 * 3 * (16 + 11)  # 173: never one key per node
    for key in PINNED:
        parse_key(key)  # the one parser reads every key back
    assert result.scalars["ssb/epoch"] == -1.0
    assert sorted(result.tables) == ["crossover", "nodes", "sensitivity"]
    columns, rows = result.tables["sensitivity"]
    assert columns[:4] == ["site", "family", "granularity", "l2"] and len(rows) == 2 * 2 * 2
    assert result.meta["families"] == ["own", "shared"] and result.meta["nulls"] == ["train", "both"]
    assert result.meta["sites"] == {SITE: [2, 2]} and result.meta["step"] == 7 and result.meta["prefix"] == "ssb"
    # the penalties were chosen here (the rule's) and handed back through the plan for the later states
    chosen = result.meta["penalties"]
    assert chosen["source"] == {"shared": "cv", "node": "cv", "group": "cv"}
    assert plan.book.penalties.node == chosen["node"]
    assert result.scalars[f"ssb/{SITE}/own/node/l2"] == chosen["node"]
    convergence = result.meta["convergence"][SITE]
    assert convergence == {"unconverged": 0.0, "stalled": 0.0, "grad_max": convergence["grad_max"]}


def test_values_are_the_analysis_values_at_the_plans_penalties():
    config = AnalysisConfig(crossover_sizes=[])
    fixed = Penalties(shared=0.02, node=0.03, group=0.04)
    snap = snapshot(epoch=3)
    result = build_result(snap, config, figures=False, plan=AnalysisPlan(book=PenaltyBook(fixed), nulls=[]))
    assert not any("/null" in k for k in result.scalars) and result.meta["nulls"] == []
    direct = analyze_all(snap.train[SITE], snap.y_train, snap.test[SITE], snap.y_test, 3, config, nulls=[],
                         penalties=fixed)
    assert result.scalars[f"ssb/{SITE}/own/head/l2"] == 0.04 and result.scalars[f"ssb/{SITE}/shared/site/l2"] == 0.02
    for family, _is_null, g, stat, value in direct.statistics():
        logged = result.scalars[f"ssb/{SITE}/{family}/{g}/{stat}"]
        assert logged == value or (logged != logged and value != value), (family, g, stat)
    torch.testing.assert_close(result.arrays[f"{SITE}/shared/node/accuracy"],
                               direct.real["shared"].node_accuracy.flatten())
    own = result.arrays[f"{SITE}/own/node/accuracy"]  # node 0 carries the label (3 sigma apart): the best node
    assert int(own.argmax()) == 0 and own[0] > 0.8 and own[1:].max() < 0.6
    rows = result.tables["nodes"][1]
    assert len(rows) == 2 * 4 and {r[1] for r in rows} == {"own", "shared"}  # one row per node and family


def test_the_sensitivity_table_from_forked_workers_has_the_rows_of_one_call():
    """The sensitivity runs as its own task beside the sites (two forked workers here, one thread each):
    its table holds the rows a direct `sensitivity` call makes, value for value, in its order, each
    prefixed with the site."""
    config = AnalysisConfig(crossover_sizes=[], sensitivity_grid=[1e-3, 1e-1, 10.0])
    snap = snapshot()
    plan = AnalysisPlan(book=PenaltyBook(Penalties(shared=0.02, node=0.03, group=0.04)), nulls=[],
                        sensitivity=[SITE], workers=2)
    columns, rows = build_result(snap, config, figures=False, plan=plan).tables["sensitivity"]
    direct = sensitivity(snap.train[SITE], snap.y_train, snap.test[SITE], snap.y_test, 3, config, name=SITE)
    assert len(direct) == 2 * 2 * 3  # families x granularities x penalties
    assert columns == ["site", *direct[0]]
    expected = [[SITE, *row.values()] for row in direct]
    assert [r[:4] for r in rows] == [r[:4] for r in expected]  # site, family, granularity, l2: the same order
    for got, want in zip(rows, expected, strict=True):
        assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got[4:], want[4:], strict=True)), (
            got, want)

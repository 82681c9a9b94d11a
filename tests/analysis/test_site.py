"""One analysis of a site end to end: both read-out families, the penalty rule, the two nulls, the
sensitivity, planted structure, errors."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lightning_ssb.analysis import (
    AnalysisConfig,
    Penalties,
    analyze_all,
    analyze_site,
    choose_penalties,
    fit_groups,
    fit_node_lines,
    head_accuracies,
    label_stats,
    learned_labels,
    node_accuracies,
    null_labels,
    sensitivity,
    subset_accuracy,
)
from lightning_ssb.analysis.penalty import stratified_folds
from tests.values import same

H, D_HEAD, K = 3, 4, 5
FIXED = Penalties(shared=1e-3, node=1e-3, group=1e-3)


def snapshot(n, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    centres = torch.randn(K, H, D_HEAD, generator=torch.Generator().manual_seed(99))
    return centres[y] * 1.5 + torch.randn(n, H, D_HEAD, generator=gen), y


@pytest.fixture(scope="module")
def results():
    (xtr, ytr), (xte, yte) = snapshot(500, 0), snapshot(200, 1)
    cfg = AnalysisConfig(crossover_draws=2, top_nodes=3)
    return analyze_all(xtr, ytr, xte, yte, K, cfg, penalties=FIXED), (xtr, ytr, xte, yte), cfg


def test_shared_family_agrees_with_the_plain_functions(results):
    res, (_, _, xte, yte), _ = results
    a = res.real["shared"]
    x = xte.flatten(1)
    assert torch.all(a.readout.bias == 0)                       # bias-free by default
    assert a.site_accuracy == subset_accuracy(x, yte, a.readout, range(H * D_HEAD)) and a.site_accuracy > 0.6
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(x, yte, a.readout))
    assert torch.equal(a.head_accuracy, head_accuracies(x, yte, a.readout, H))
    assert not (a.node_labels & ~a.hull_labels).any()
    assert (a.node_accuracy.flatten() <= a.hull_bound + 1e-12).all()
    assert [r["m"] for r in a.crossover] == [1, 2, 4, 8, 12]
    assert a.crossover[0]["cooperation"] in (1.0,) or math.isnan(a.crossover[0]["cooperation"])
    assert a.penalties == {"shared": 1e-3} and a.fits["site"].converged.all()


def test_own_family_is_each_units_own_fit(results):
    res, (xtr, ytr, xte, yte), cfg = results
    a = res.real["own"]
    x, xt = xte.flatten(1).double(), xtr.flatten(1)
    slope, intercept, _ = fit_node_lines(xt, ytr, K, cfg.own_bins, cfg.settings(FIXED.node))
    brute = (x.T.unsqueeze(2) * slope.unsqueeze(1) + intercept.unsqueeze(1)).argmax(2)   # [D, N] argmax of K lines
    assert torch.equal(a.node_accuracy.flatten(), (brute == yte).double().mean(1))
    for h in range(H):
        w, b, _ = fit_groups(xt[:, h * D_HEAD:(h + 1) * D_HEAD], ytr, K, True, cfg.settings(FIXED.group))
        acc = ((x[:, h * D_HEAD:(h + 1) * D_HEAD] @ w.T + b).argmax(1) == yte).double().mean()
        assert a.head_accuracy[h].item() == acc.item()
    assert math.isnan(a.site_accuracy)
    assert (a.node_accuracy.flatten() <= a.hull_bound + 1e-12).all() and not (a.node_labels & ~a.hull_labels).any()
    best = a.node_accuracy.flatten().argsort(descending=True, stable=True)[:3].tolist()
    assert [b["node"] for b in a.best_nodes] == best
    assert a.best_nodes[0]["confusion"].sum() == 200 and a.best_nodes[0]["field"].shape == (K, K)
    # rows centred
    assert torch.allclose(a.best_nodes[0]["field"].sum(1), torch.zeros(K, dtype=torch.float64), atol=1e-9)
    assert a.crossover[0]["cooperation"] == 1.0 or math.isnan(a.crossover[0]["cooperation"])
    assert set(a.fits) == {"node", "head", "subset"} and all(r.converged.all() for r in a.fits.values())


def test_statistic_names_and_the_nulls(results):
    res, _, _ = results
    stats = {(f, n, g, s) for f, n, g, s, _ in res.statistics()}
    per_unit = {"live", "live_fraction", "phi", "overlap", "mean_labels", "coverage", "acc_mean", "acc_max",
                "cluster_count", "cluster_size", "cluster_noise"}
    hull = {"hull_labels", "hull_labels_all", "hull_bound", "hull_tightness", "hull_violations"}
    expected = {(f, n, g, s) for f in ("own", "shared") for n in (None, "train", "both") for g in ("node", "head")
                for s in per_unit | (hull if g == "node" else set())}
    expected |= {("shared", None, "site", s) for s in ("acc", "l2", "fit_unconverged", "fit_grad_max")}
    expected |= {("own", None, "site", s) for s in ("fit_unconverged", "fit_grad_max")}
    expected |= {("own", None, g, "l2") for g in ("node", "head")}
    assert stats == expected
    values = {(f, n, g, s): v for f, n, g, s, v in res.statistics()}
    for f in ("own", "shared"):
        assert values[(f, None, "node", "hull_violations")] == 0.0
        assert values[(f, "both", "node", "live")] <= 1             # both splits permuted: nothing learned
        assert values[(f, None, "head", "live")] == H               # every head learned something
        assert values[(f, None, "site", "fit_unconverged")] == 0.0
    assert values[("own", None, "node", "l2")] == FIXED.node and values[("shared", None, "site", "l2")] == FIXED.shared
    arrays = res.arrays()
    assert arrays["own/node/labels"].shape == (H * D_HEAD, K) and arrays["shared/null_both/head/labels"].shape == (H, K)
    assert "own/null_train/best/field" not in arrays and arrays["own/best/field"].shape == (3, K, K)


def test_the_probe_train_null_scores_noise_fitted_read_outs_on_the_real_labels(results):
    """Both nulls share one set of read-outs fitted on permuted probe-train labels; the probe-train null
    scores them against the real probe-test labels, the both-splits null against permuted ones."""
    res, (xtr, ytr, xte, yte), cfg = results
    ytr_p, yte_p = null_labels(ytr, yte, cfg.seed)
    assert not torch.equal(ytr_p, ytr) and torch.equal(ytr_p.sort().values, ytr.sort().values)
    slope, intercept, _ = fit_node_lines(xtr.flatten(1), ytr_p, K, cfg.own_bins, cfg.settings(FIXED.node))
    x = xte.flatten(1).double()
    pred = (x.T.unsqueeze(2) * slope.unsqueeze(1) + intercept.unsqueeze(1)).argmax(2)
    for kind, labels in (("train", yte), ("both", yte_p)):
        a = res.null[kind]["own"]
        assert torch.equal(a.node_accuracy.flatten(), (pred == labels).double().mean(1))
        assert torch.equal(a.node_labels, learned_labels(label_stats(pred, labels, K), cfg.theta, cfg.q))


def planted(n_per, k, h, d, seed, sigma=2.5):
    """Label c planted on nodes c, c+K, c+2K, ... (not centred: every node sits at 3 + noise)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n_per)
    x = torch.randn(len(y), h * d, generator=gen) + 3.0
    owner = torch.arange(h * d) % k
    x += sigma * (owner.unsqueeze(0) == y.unsqueeze(1))
    return x.view(-1, h, d), y


def test_planted_structure_is_recovered_by_the_defaults_and_the_nulls_show_nothing():
    k, h, d = 8, 4, 6
    (xtr, ytr), (xte, yte) = planted(150, k, h, d, 0), planted(60, k, h, d, 1)
    res = analyze_all(xtr, ytr, xte, yte, k, AnalysisConfig(crossover_sizes=[]))   # the defaults: CV, both nulls
    assert res.penalties.source == {"shared": "cv", "node": "cv", "group": "cv"}
    a = res.real["own"]
    truth = torch.zeros(h * d, k, dtype=torch.bool)
    truth[torch.arange(h * d), torch.arange(h * d) % k] = True
    assert (a.node_labels == truth).all(1).double().mean() >= 0.95     # the chosen penalty keeps the planted labels
    # planted Phi: 24 nodes, each label on 3 of them: overlap = (8 * 3 * 2) / (24 * 23)
    assert a.order["node"]["phi"] == pytest.approx(1 - 48 / (24 * 23), abs=0.02)
    for family in ("own", "shared"):
        assert res.null["both"][family].order["node"]["live"] <= 1   # calibration: about 0 whatever the activations
    # fitted on noise, a node's strong region gets a random label: it is the node's true label for about
    # 1 node in K (24 / 8 = 3 expected); far fewer than the 24 real ones, and how many is what this null measures
    assert res.null["train"]["own"].order["node"]["live"] <= 3 * (h * d) / k
    gen = torch.Generator().manual_seed(7)
    cfg = AnalysisConfig(readout="own", crossover_sizes=[])
    perm_tr, perm_te = ytr[torch.randperm(len(ytr), generator=gen)], yte[torch.randperm(len(yte), generator=gen)]
    null = analyze_site(xtr, perm_tr, xte, perm_te, k, cfg, penalties=res.penalties)
    assert null.order["node"]["live"] <= 1
    loose = analyze_site(xtr, perm_tr, xte, perm_te, k, replace(cfg, q=None, theta=0.3), penalties=res.penalties)
    assert loose.order["node"]["live"] > null.order["node"]["live"]   # without the test, noise passes


def node_heldout_loss(x, y, k, l2, folds):
    """Brute force for one penalty: every node's own lines fitted on k - 1 folds with scipy (exact
    examples, no bins), the held-out fold's mean cross-entropy, averaged over nodes, pooled over folds."""
    total = 0.0
    for f in range(int(folds.max()) + 1):
        tr, te = folds != f, folds == f
        for n in range(x.shape[1]):
            xs_tr = x[tr, n].numpy()
            mean, std = xs_tr.mean(), xs_tr.std()
            z_tr = (xs_tr - mean) / std
            onehot = np.eye(k)[y[tr].numpy()]

            def obj(theta, z_tr=z_tr, onehot=onehot):
                a, c = theta[:k], theta[k:]
                z = np.outer(z_tr, a) + c
                z = z - z.max(1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(1, keepdims=True)
                g = (p - onehot) / len(z_tr)
                return (-(onehot * np.log(p)).sum() / len(z_tr) + 0.5 * l2 * (a * a).sum(),
                        np.concatenate([(g * z_tr[:, None]).sum(0) + l2 * a, g.sum(0)]))

            theta = minimize(obj, np.zeros(2 * k), jac=True, method="L-BFGS-B",
                             options={"gtol": 1e-10, "maxiter": 5000}).x
            z = np.outer((x[te, n].numpy() - mean) / std, theta[:k]) + theta[k:]
            lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
            total += (lse - z[np.arange(len(z)), y[te].numpy()]).sum() / x.shape[1]
    return total / len(y)


def test_cross_validated_penalty_is_the_argmin_of_an_independent_cv_curve():
    gen = torch.Generator().manual_seed(3)
    n, k = 240, 4
    y = torch.arange(n) % k
    x = (0.6 * torch.randn(k, 3, generator=gen)[y] + torch.randn(n, 3, generator=gen)).double()  # informative
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    cfg = AnalysisConfig(readout="own", cv_grid=grid, cv_folds=3, own_bins=None, cv_max_nodes=None)
    chosen = choose_penalties(x.unsqueeze(1), y, k, cfg)
    folds = stratified_folds(y, 3, cfg.seed)
    brute = [node_heldout_loss(x, y, k, l2, folds) for l2 in grid]
    curve = dict(chosen.curves["node"])
    # both fits stop within a gradient of 1e-6 (ours) and 1e-10 (scipy) of the same optimum
    assert np.allclose([curve[l2] for l2 in grid], brute, rtol=1e-5)
    assert chosen.node == grid[int(np.argmin(brute))] and chosen.source["node"] == "cv"


def group_heldout_loss(x, y, k, l2, folds, bias):
    """Brute force for one penalty: each read-out of x `[G, N, m]` (a head, or the site without a bias)
    fitted on k - 1 folds by scipy's L-BFGS-B on its own standardised nodes, the held-out fold's mean
    cross-entropy, averaged over the read-outs, pooled over folds."""
    total = 0.0
    for f in range(int(folds.max()) + 1):
        tr, te = folds != f, folds == f
        for g in range(x.shape[0]):
            xtr = x[g][tr].numpy()
            shift = xtr.mean(0) if bias else np.zeros(xtr.shape[1])
            scale = xtr.std(0) if bias else np.sqrt((xtr * xtr).mean(0))
            z_tr = (xtr - shift) / scale
            onehot = np.eye(k)[y[tr].numpy()]
            n, m = z_tr.shape

            def obj(theta, z_tr=z_tr, onehot=onehot, n=n, m=m):
                w = theta[:k * m].reshape(k, m)
                z = z_tr @ w.T + (theta[k * m:] if bias else 0.0)
                z = z - z.max(1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(1, keepdims=True)
                r = (p - onehot) / n
                grad = np.concatenate([(r.T @ z_tr + l2 * w).ravel()] + ([r.sum(0)] if bias else []))
                return -(onehot * np.log(p)).sum() / n + 0.5 * l2 * (w * w).sum(), grad

            theta = minimize(obj, np.zeros(k * m + (k if bias else 0)), jac=True, method="L-BFGS-B",
                             options={"gtol": 1e-10, "maxiter": 5000}).x
            w = theta[:k * m].reshape(k, m)
            z = ((x[g][te].numpy() - shift) / scale) @ w.T + (theta[k * m:] if bias else 0.0)
            lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
            total += (lse - z[np.arange(len(z)), y[te].numpy()]).sum() / x.shape[0]
    return total / len(y)


def test_cross_validated_head_and_site_penalties_match_an_independent_cv_curve():
    """The heads' and the shared read-out's curves (each fold standardised once and refitted at every
    penalty, warm-started) against scipy fits made from scratch for every fold and penalty."""
    gen = torch.Generator().manual_seed(4)
    n, k = 240, 4
    y = torch.arange(n) % k
    x = (0.7 * torch.randn(k, 2, 3, generator=gen)[y] + torch.randn(n, 2, 3, generator=gen)).double() + 2.0
    grid = [1e-3, 1e-1, 10.0]
    cfg = AnalysisConfig(cv_grid=grid, cv_folds=3, crossover_sizes=[], cv_max_nodes=None)
    chosen = choose_penalties(x, y, k, cfg)
    folds = stratified_folds(y, 3, cfg.seed)
    heads = x.transpose(0, 1)                       # [H, N, d]: each head with a bias
    site = x.flatten(1).unsqueeze(0)                # [1, N, D]: the shared read-out, no bias
    for part, groups, bias in (("group", heads, True), ("shared", site, False)):
        brute = [group_heldout_loss(groups, y, k, l2, folds, bias) for l2 in grid]
        curve = dict(chosen.curves[part])
        # the cross-validation's fits stop after their float32 phase (largest gradient entry 1e-4)
        assert np.allclose([curve[l2] for l2 in grid], brute, rtol=1e-4), part
        assert getattr(chosen, part) == grid[int(np.argmin(brute))]


def test_cross_validation_finds_the_known_answers():
    """Pure noise: no read-out beats the prior, so the strongest penalty of the grid wins. Labels that
    the nodes separate perfectly: the weakest penalty wins (every penalty only costs held-out fit)."""
    gen = torch.Generator().manual_seed(5)
    n, k = 400, 4
    y = torch.arange(n) % k
    grid = [1e-4, 1e-2, 1.0]
    cfg = AnalysisConfig(cv_grid=grid, crossover_sizes=[])
    noise = torch.randn(n, 2, 3, generator=gen)
    p = choose_penalties(noise, y, k, cfg)
    assert (p.shared, p.node, p.group) == (1.0, 1.0, 1.0)
    clean = torch.randn(k, 2, 3, generator=gen)[y] * 4 + 0.05 * torch.randn(n, 2, 3, generator=gen)
    p = choose_penalties(clean, y, k, cfg)
    assert (p.shared, p.group) == (1e-4, 1e-4)
    # a number in the config overrides the rule, part by part
    p = choose_penalties(clean, y, k, replace(cfg, own_l2=0.5))
    assert p.node == 0.5 and p.source["node"] == "config" and p.source["group"] == "cv" and "node" not in p.curves


def test_sensitivity_rows_move_with_the_penalty():
    k, h, d = 8, 2, 4
    (xtr, ytr), (xte, yte) = planted(40, k, h, d, 2, sigma=1.5), planted(20, k, h, d, 3, sigma=1.5)
    cfg = AnalysisConfig(sensitivity_grid=[1e-4, 1.0, 100.0], crossover_sizes=[])
    rows = sensitivity(xtr, ytr, xte, yte, k, cfg)
    assert ({(r["family"], r["granularity"]) for r in rows}
            == {(f, g) for f in ("own", "shared") for g in ("node", "head")})
    for family in ("own", "shared"):
        for gran in ("node", "head"):
            got = {r["l2"]: r for r in rows if r["family"] == family and r["granularity"] == gran}
            assert sorted(got) == [1e-4, 1.0, 100.0]
            for l2, row in got.items():  # each row is the site's analysis at that penalty
                at = analyze_site(xtr, ytr, xte, yte, k, replace(cfg, readout=family),
                                  penalties=Penalties(shared=l2, node=l2, group=l2))
                for stat in ("live", "live_fraction", "mean_labels", "coverage", "phi"):
                    assert row[stat] == pytest.approx(at.order[gran][stat], nan_ok=True), (family, gran, l2, stat)
    # one granularity alone: its rows as before, none of the other's
    nodes_only = sensitivity(xtr, ytr, xte, yte, k, replace(cfg, granularities=["node"]))
    assert same(nodes_only, [r for r in rows if r["granularity"] == "node"])


def test_a_site_at_any_scale_gives_the_same_statistics():
    """Activations x 1e300 or x 1e-300 (their squares leave float64) analyse like the original."""
    (xtr, ytr), (xte, yte) = snapshot(300, 6), snapshot(100, 7)
    cfg = AnalysisConfig(crossover_sizes=[2], crossover_draws=2, top_nodes=0)
    ref = analyze_all(xtr, ytr, xte, yte, K, cfg, penalties=FIXED, nulls=[])
    for factor in (1e300, 1e-300):
        res = analyze_all(xtr.double() * factor, ytr, xte.double() * factor, yte, K, cfg, penalties=FIXED, nulls=[])
        for family in ("own", "shared"):
            assert torch.equal(res.real[family].node_labels, ref.real[family].node_labels)
            assert torch.equal(res.real[family].node_accuracy, ref.real[family].node_accuracy)
            assert torch.equal(res.real[family].head_labels, ref.real[family].head_labels)


def test_shared_bias_and_mean_ablation_options():
    (xtr, ytr), (xte, yte) = snapshot(300, 2), snapshot(100, 3)
    cfg = AnalysisConfig(readout="shared", shared_bias=True, ablation="mean", granularities=("node",),
                         crossover_sizes=[], top_nodes=0, l2=1e-3)
    a = analyze_site(xtr, ytr, xte, yte, K, cfg)
    assert a.head_accuracy is None and "head" not in a.order and a.crossover == [] and a.best_nodes == []
    assert not torch.all(a.readout.bias == 0)
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(xte.flatten(1), yte, a.readout, "mean"))
    assert set(a.statistics()) == {"site", "node"}


def test_bad_input_and_config_name_the_argument():
    (xtr, ytr), (xte, yte) = snapshot(100, 4), snapshot(50, 5)
    nan = xte.clone()
    nan[3, 1, 2] = math.nan
    cases = [
        ((xtr, ytr, nan, yte, K), "x_test contains 1 NaN"),
        ((xtr.flatten(1), ytr, xte, yte, K), "x_train must have 3 dims"),
        ((xtr, ytr, xte[:, :2], yte, K), "x_train and x_test must share"),
        ((xtr, ytr[:-1], xte, yte, K), r"y_train must have shape \[100\]"),
        ((xtr, ytr, xte, yte + 1, K), "y_test has labels in"),
        ((xtr, ytr, xte, yte % 4, K), r"y_test has no example of class \[4\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            analyze_site(*args, penalties=FIXED)
    with pytest.raises(ValueError, match="analyze_site analyses one read-out family"):
        analyze_site(xtr, ytr, xte, yte, K, AnalysisConfig(), penalties=FIXED)
    # non-finite activations: one line naming the site and the first node that has one
    inf = xtr.clone()
    inf[7, 2, 1] = math.inf
    with pytest.raises(ValueError,
                       match=r"blocks.3.attn.heads: x_train contains 1 NaN or inf values \(first at node 9\)"):
        analyze_site(inf, ytr, xte, yte, K, AnalysisConfig(readout="own"), penalties=FIXED, name="blocks.3.attn.heads")
    for bad, key in [(dict(granularities=("layer",)), "granularities"), (dict(ablation="noise"), "ablation"),
                     (dict(readout="all"), "readout"), (dict(q=1.5), "q must"), (dict(null_mode="some"), "null_mode"),
                     (dict(own_bins=1), "own_bins"), (dict(l2=-1.0), "l2"), (dict(crossover_sizes=[0]), "crossover"),
                     (dict(nulls=["train", "other"]), "nulls"), (dict(cv_folds=1), "cv_folds"),
                     (dict(cv_grid=[0.0]), "cv_grid"), (dict(gtol=0.0), "gtol")]:
        with pytest.raises(ValueError, match=key):
            AnalysisConfig(**bad)

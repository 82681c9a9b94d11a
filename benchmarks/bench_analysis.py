"""Speed of the analysis core (README figures).

1. Single-node prediction at K = 30522 (the whole vocabulary), N = 20,000, 64 nodes: the envelope path
   against brute-force argmax over all K fields; checks that the predictions are identical.
2. A full analysis (`analyze_all`: both read-out families, the null, crossover 11 sizes x 5 draws with
   exact reachability) at the FewRel scale: N = 4,480 probe-test, 40,320 probe-train (or --train),
   D = 768 as 12 x 64, K = 64: the time of each part and the peak memory.

    python benchmarks/bench_analysis.py [--bf-nodes 64] [--train 40320] [--threads 0]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lightning_ssb.analysis import AnalysisConfig, Readout, analyze_site, node_predictions


def brute_force(x: torch.Tensor, readout: Readout, nodes: int, chunk: int = 512) -> torch.Tensor:
    """Prediction [nodes, N] of each node alone by the argmax of all K fields, in row chunks."""
    out = torch.empty(nodes, x.shape[0], dtype=torch.long)
    for n in range(nodes):
        for s in range(0, x.shape[0], chunk):
            out[n, s:s + chunk] = (x[s:s + chunk, n, None] * readout.weight[:, n] + readout.bias).argmax(1)
    return out


def bench_envelope(bf_nodes: int) -> None:
    k, n, d = 30522, 20_000, 64
    gen = torch.Generator().manual_seed(0)
    readout = Readout(torch.randn(k, d, generator=gen) * 0.1, torch.randn(k, generator=gen))
    x = torch.randn(n, d, generator=gen)
    t0 = time.perf_counter()
    fast = node_predictions(x, readout)
    t_env = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = brute_force(x, readout, bf_nodes)
    t_bf = (time.perf_counter() - t0) * d / bf_nodes
    same = torch.equal(fast[:bf_nodes], slow)
    print(f"[envelope] K={k} N={n} nodes={d}: envelope {t_env:.2f} s, brute force {t_bf:.1f} s"
          f"{'' if bf_nodes == d else f' (extrapolated from {bf_nodes} nodes)'}; "
          f"speed-up {t_bf / t_env:.0f}x; identical predictions: {same}")
    if not same:
        raise SystemExit("envelope and brute-force predictions differ")


def fewrel_like(n: int, gen: torch.Generator, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % centres.shape[0]
    return centres[y] + torch.randn(n, 12, 64, generator=gen), y


def bench_site(n_train: int) -> None:
    """analyze_all at FewRel scale, every part timed on its own; their sum is one full analysis."""
    from dataclasses import replace

    from lightning_ssb.analysis.crossover import crossover
    from lightning_ssb.analysis.site import permuted

    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(64, 12, 64, generator=gen) * 0.3
    x_train, y_train = fewrel_like(n_train, gen, centres)
    x_test, y_test = fewrel_like(4480, gen, centres)
    config = AnalysisConfig(crossover_draws=5)
    quiet = replace(config, crossover_sizes=[])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, results = {}, {}
    cpu0 = time.process_time()
    for family in ("shared", "own"):
        t0 = time.perf_counter()
        results[family] = analyze_site(x_train, y_train, x_test, y_test, 64, replace(quiet, readout=family),
                                       readout=results["shared"].readout if "shared" in results else None)
        times[f"{family} read-out fits + node/head statistics + hull"] = time.perf_counter() - t0
    xte = x_test.flatten(1)
    for family in ("shared", "own"):
        r = results[family]
        t0 = time.perf_counter()
        rows = crossover(xte, y_test, r.readout, r.node_labels, 12, None, config.crossover_draws, config.seed,
                         config.ablation, config.theta, config.q, family, x_train.flatten(1), y_train,
                         config.fit_settings(own=family == "own"), config.crossover_max_train)
        times[f"{family} crossover ({len(rows)} sizes x {config.crossover_draws} draws, exact reachability)"] = \
            time.perf_counter() - t0
    g = torch.Generator().manual_seed(config.seed + 104729)
    ytr, yte = permuted(y_train, g), permuted(y_test, g)
    nulls = {}
    for family in ("shared", "own"):
        t0 = time.perf_counter()
        nulls[family] = analyze_site(x_train, ytr, x_test, yte, 64, replace(quiet, readout=family, top_nodes=0))
        times[f"{family} null (permuted labels)"] = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall = sum(times.values())
    print(f"[site] N_train={n_train} N_test=4480 D=12x64 K=64, both families, the null on:")
    for name, t in times.items():
        print(f"[site]   {t:6.1f} s  {name}")
    print(f"[site] total {wall:.1f} s wall, {time.process_time() - cpu0:.1f} s CPU; peak RSS {rss / 2**20:.2f} GiB "
          f"(inputs and process before: {base_rss / 2**20:.2f} GiB)")
    for family in ("own", "shared"):
        s, n = results[family].scalars(), nulls[family].scalars()
        print(f"[site] {family}: node live {s['node/live']:.0f}/768 (null {n['node/live']:.0f}), "
              f"head live {s['head/live']:.0f}/12 (null {n['head/live']:.0f}), node acc max {s['node/acc_max']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf-nodes", type=int, default=64, help="nodes to brute-force (time extrapolated)")
    parser.add_argument("--train", type=int, default=40_320, help="probe-train examples for the read-out")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_site(args.train)
    bench_envelope(args.bf_nodes)


if __name__ == "__main__":
    main()

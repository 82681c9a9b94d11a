"""Speed of the analysis core (README figures).

1. Single-node prediction at K = 30522 (the whole vocabulary), N = 20,000, 64 nodes: the envelope path
   against brute-force argmax over all K fields; checks that the predictions are identical.
2. A full `analyze_site` at the FewRel scale: N = 4,480 probe-test, 40,320 probe-train (or --train),
   D = 768 as 12 x 64, K = 64, crossover with 5 draws per size: wall time and peak memory.

    python benchmarks/bench_analysis.py [--bf-nodes 64] [--train 40320] [--threads 0]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import torch

from lightning_ssb.analysis import AnalysisConfig, Readout, analyze_site, fit_readout, node_predictions


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
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(64, 12, 64, generator=gen) * 0.3
    x_train, y_train = fewrel_like(n_train, gen, centres)
    x_test, y_test = fewrel_like(4480, gen, centres)
    config = AnalysisConfig(crossover_draws=5)
    tracemalloc.start()  # sees numpy/scipy allocations; torch tensors show in ru_maxrss
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    readout = fit_readout(x_train.flatten(1), y_train, 64, l2=config.l2, max_iter=config.max_iter)
    t_fit = time.perf_counter() - t0
    result = analyze_site(x_train, y_train, x_test, y_test, 64, config, readout=readout)
    wall = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = result.scalars()
    print(f"[site] N_train={n_train} N_test=4480 D=12x64 K=64 crossover {len(result.crossover)} sizes x 5 draws: "
          f"wall {wall:.1f} s (read-out fit {t_fit:.1f} s, rest {wall - t_fit:.1f} s); "
          f"peak RSS {rss / 2**20:.2f} GiB (inputs and process before: {base_rss / 2**20:.2f} GiB), "
          f"python-heap peak {py_peak / 2**20:.0f} MiB")
    print(f"[site] site/acc {s['site/acc']:.3f}, node/phi {s['node/phi']:.3f}, head/phi {s['head/phi']:.3f}, "
          f"hull/tightness_mean {s['hull/tightness_mean']:.3f}")


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

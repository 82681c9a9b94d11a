"""Speed of the analysis core (README figures).

1. Single-node prediction at K = 30522 (the whole vocabulary), N = 20,000, 64 nodes: the envelope path
   against brute-force argmax over all K fields; checks that the predictions are identical.
2. One FewRel-scale site (N = 40,320 probe-train, 4,480 probe-test, D = 768 as 12 x 64, K = 64):
   the penalty rule (cross-validation on probe-train, once per run), then one analysis as the monitor
   runs it at its reference and last epoch (both read-out families, both nulls, crossover 11 sizes x 5
   draws with exact reachability), with the time of every stage (``lightning_ssb.analysis.timing``)
   and the peak memory; on the CPU and, when a GPU is present, on the GPU.
3. With ``--mlm-k``: one site at an MLM probe of K tokens (synthetic, Zipf frequencies; 12 x 16 nodes as
   in tokens.yaml, ``--mlm-nodes 12x64`` for BERT-6), the penalty rule and one analysis as the MLM
   configs run it, for each K.

    python benchmarks/bench_analysis.py [--bf-nodes 64] [--train 40320] [--threads 0] [--device cpu cuda]
    python benchmarks/bench_analysis.py --skip-site --skip-envelope --mlm-k 50 1000 [--lp-workers 2]
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time

import torch

from lightning_ssb.analysis import AnalysisConfig, Readout, node_predictions


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


_PHASE = {"what": "start-up", "since": time.perf_counter()}  # what runs now, for `report_when_stopped`


def report_when_stopped() -> None:
    """On SIGTERM (``timeout``'s signal) print what was running, for how long, and the stages it finished,
    then leave: a run longer than its time limit (K = 30,522 on a GPU lease) still says where its time went."""
    def stop(signum, frame):
        from lightning_ssb.analysis.timing import so_far

        done = sorted(so_far().items(), key=lambda kv: -kv[1])
        print(f"[stopped by signal {signum}] {_PHASE['what']}: {time.perf_counter() - _PHASE['since']:.1f} s so far; "
              f"stages finished: " + (", ".join(f"{name} {t:.1f} s" for name, t in done) or "none"), flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def rule_and_analysis(x_train, y_train, x_test, y_test, k: int, config: AnalysisConfig, lp_workers: int = 1,
                      what: str = "site"):
    """The penalty rule, then one analysis with both nulls, as a run's first state: (penalties, the rule's
    seconds, the SiteResults, the analysis' seconds by stage, its wall seconds)."""
    from lightning_ssb.analysis import analyze_all, choose_penalties
    from lightning_ssb.analysis.timing import collect

    t0 = time.perf_counter()
    _PHASE.update(what=f"{what}: the penalty rule", since=t0)
    with collect():  # the penalty rule's stages stay out of the analysis' breakdown
        penalties = choose_penalties(x_train, y_train, k, config, "blocks.5.attn.heads")
    t_cv = time.perf_counter() - t0
    t0 = time.perf_counter()
    _PHASE.update(what=f"{what}: the analysis", since=t0)
    with collect() as seconds:
        res = analyze_all(x_train, y_train, x_test, y_test, k, config, nulls=["train", "both"], penalties=penalties,
                          name="blocks.5.attn.heads", workers=lp_workers)
    return penalties, t_cv, res, seconds, time.perf_counter() - t0


def lp_workers_for(device: str, requested: int | None) -> int:
    """Processes for the crossover's linear programs: as asked, else as the monitor's schedule
    (``results.build.process_split``: all of ``parallel.default_workers()`` on an accelerator, 1 on a CPU)."""
    from lightning_ssb.parallel import default_workers
    from lightning_ssb.results.build import process_split

    return requested if requested is not None else process_split(torch.device(device), default_workers())[1]


def bench_site(n_train: int, device: str, lp_workers: int | None = None) -> None:
    """choose_penalties and analyze_all at FewRel scale on `device`, every stage timed."""
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(64, 12, 64, generator=gen) * 0.3
    x_train, y_train = fewrel_like(n_train, gen, centres)
    x_test, y_test = fewrel_like(4480, gen, centres)
    x_train, y_train = x_train.to(device), y_train.to(device)
    config = AnalysisConfig(crossover_draws=5)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    lp = lp_workers_for(device, lp_workers)
    penalties, t_cv, res, seconds, wall = rule_and_analysis(x_train, y_train, x_test, y_test, 64, config, lp,
                                                            f"[site/{device}]")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"[site/{device}] N_train={n_train} N_test=4480 D=12x64 K=64; penalties {penalties.shared:g} (shared), "
          f"{penalties.node:g} (nodes), {penalties.group:g} (heads and subsets)")
    print(f"[site/{device}] penalty rule (once per run): {t_cv:.1f} s")
    print(f"[site/{device}] one analysis, both families, both nulls, crossover: {wall:.1f} s wall "
          f"(linear programs in {lp} process{'es' if lp > 1 else ''})")
    for name, t in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"[site/{device}]   {t:6.1f} s  {name}")
    print(f"[site/{device}] {time.process_time() - cpu0:.1f} s CPU in all; peak RSS {rss / 2**20:.2f} GiB "
          f"(inputs and process before: {base_rss / 2**20:.2f} GiB)"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.startswith("cuda")
             else ""))
    print(f"[site/{device}] fits: {res.convergence()}")
    for family in ("own", "shared"):
        s_, n_ = res.real[family].scalars(), res.null["train"][family].scalars()
        print(f"[site/{device}] {family}: node live {s_['node/live']:.0f}/768 "
              f"(probe-train null {n_['node/live']:.0f}), "
              f"head live {s_['head/live']:.0f}/12, node acc max {s_['node/acc_max']:.3f}")


def mlm_like(n: int, k: int, gen: torch.Generator, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples of an MLM probe of k tokens: every token once, the rest drawn by Zipf's law (token
    frequencies fall as 1 / rank), each at its token's centre plus unit noise."""
    p = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
    y = torch.cat([torch.arange(k), torch.multinomial(p / p.sum(), n - k, replacement=True, generator=gen)])
    return centres[y] + torch.randn(n, *centres.shape[1:], generator=gen), y


def bench_mlm_site(k: int, n_train: int, n_test: int, heads: int, d: int, device: str,
                   lp_workers: int | None = None, sizes: list[int] | None = None) -> None:
    """The penalty rule and one analysis of a site at an MLM probe of k tokens (synthetic, Zipf
    frequencies) as tokens.yaml and quickstart_mlm.yaml analyse it: nodes and heads, both families,
    both nulls, crossover 1, 2, 4, ... nodes x 5 draws."""
    if min(n_train, n_test) < k:
        raise SystemExit(f"--mlm-train and --mlm-test must each be at least K = {k} (every token needs an example)")
    gen = torch.Generator().manual_seed(2)
    centres = torch.randn(k, heads, d, generator=gen) * 0.3
    x_train, y_train = mlm_like(n_train, k, gen, centres)
    x_test, y_test = mlm_like(n_test, k, gen, centres)
    x_train, y_train = x_train.to(device), y_train.to(device)
    config = AnalysisConfig(granularities=["node", "head"], tau=0.3, crossover_sizes=sizes, crossover_draws=5)
    tag = f"[mlm site/{device} K={k}]"
    print(f"{tag} N_train={n_train} N_test={n_test} D={heads}x{d}, crossover sizes "
          f"{'1, 2, 4, ...' if sizes is None else sizes}: starting", flush=True)
    lp = lp_workers_for(device, lp_workers)
    penalties, t_cv, res, seconds, wall = rule_and_analysis(x_train, y_train, x_test, y_test, k, config, lp, tag)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{tag} penalties {penalties.shared:g} (shared), {penalties.node:g} (nodes), {penalties.group:g} "
          f"(heads and subsets)")
    print(f"{tag} penalty rule (once per run): {t_cv:.1f} s")
    print(f"{tag} one analysis, both families, both nulls, crossover: {wall:.1f} s wall "
          f"(linear programs in {lp} process{'es' if lp > 1 else ''}; an epoch of 6 such sites: about "
          f"{6 * wall:.0f} s, derived)")
    for name, t in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"{tag}   {t:6.1f} s  {name}")
    print(f"{tag} peak RSS so far {rss / 2**20:.2f} GiB; fits: {res.convergence()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf-nodes", type=int, default=64, help="nodes to brute-force (time extrapolated)")
    parser.add_argument("--train", type=int, default=40_320, help="probe-train examples for the read-out")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", nargs="*", default=None, help="devices (default: cpu, and cuda when present)")
    parser.add_argument("--skip-envelope", action="store_true")
    parser.add_argument("--skip-site", action="store_true", help="skip the FewRel-scale site")
    parser.add_argument("--mlm-k", type=int, nargs="*", default=[],
                        help="also a site at an MLM probe of each of these numbers of tokens (e.g. 50 1000)")
    parser.add_argument("--mlm-nodes", default="12x16", help="heads x nodes per head of the MLM site (tokens.yaml)")
    parser.add_argument("--mlm-train", type=int, default=4000, help="probe-train examples of the MLM site")
    parser.add_argument("--mlm-test", type=int, default=2000, help="probe-test examples of the MLM site")
    parser.add_argument("--lp-workers", type=int, default=None,
                        help="processes for the crossover's linear programs (default: as the monitor, 1 on the "
                             "CPU, parallel.default_workers() on a GPU)")
    parser.add_argument("--mlm-sizes", type=int, nargs="*", default=None,
                        help="crossover subset sizes of the MLM site (default: 1, 2, 4, ..., all nodes)")
    args = parser.parse_args()
    report_when_stopped()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    heads, d = (int(v) for v in args.mlm_nodes.lower().split("x"))
    for device in devices:
        if not args.skip_site:
            bench_site(args.train, device, args.lp_workers)
        for k in args.mlm_k:
            bench_mlm_site(k, args.mlm_train, args.mlm_test, heads, d, device, args.lp_workers, args.mlm_sizes)
    if not args.skip_envelope:
        bench_envelope(args.bf_nodes)


if __name__ == "__main__":
    main()

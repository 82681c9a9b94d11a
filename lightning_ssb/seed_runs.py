"""Seeds as an experiment: ``python -m lightning_ssb seeds --config X.yaml --seeds 0 1 2 [fit options]``.

Runs ``fit`` once per seed, one after another, into sibling run folders ``<root>/seed_<S>/`` (root:
``--root``, default ``<the config's run folder>_seeds``), then compares them (``report/compare.py``:
``<root>/compare/``). Each seed's config is the resolved config of the given one (``--print_config``)
with ``seed_everything: S``, every path under the config's run folder moved to ``<root>/seed_<S>``,
the W&B run named ``<name>-seed<S>`` (``<name>``: the logger's name, else the config file's name) and
put into the W&B group ``<name>-seeds`` (unless the config names a group); ``{seed}`` in any option is
replaced by the seed (e.g. a stage-2 run that fine-tunes each stage-1 seed: ``--model.init_args.pretrained
runs/quickstart/mlm_seeds/seed_{seed}/checkpoints/last.ckpt``).

The W&B sweep ``configs/sweeps/seeds.yaml`` runs the same command once per agent run with
``--seed_everything=S`` (one seed, no comparison), so a sweep and an offline loop leave the same folders.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
from pathlib import Path

import yaml

from lightning_ssb.run_folder import rebase


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lightning_ssb seeds",
        description="Fit one config once per seed into sibling run folders <root>/seed_<S>/, then compare the "
                    "seeds (docs/method.md 5 across seeds) into <root>/compare/. Any other option is a fit option "
                    "(--config first); '{seed}' in an option is replaced by the seed.")
    seeds = p.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="S", help="the seeds (seed_everything), in order")
    seeds.add_argument("--seed_everything", type=int, metavar="S",
                       help="one seed (what a W&B sweep agent passes); no comparison")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="folder of the seed runs; default: <the config's trainer.default_root_dir>_seeds")
    p.add_argument("--no_compare", action="store_true", help="do not compare the seeds at the end")
    return p


def resolved_config(fit_args: list[str]) -> dict:
    """The fit config these options resolve to, as the CLI's ``--print_config`` writes it."""
    from lightning_ssb.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["fit", *fit_args, "--print_config"])
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
    return yaml.safe_load(out.getvalue())


def _norm(path: str) -> str:
    return os.path.normpath(path)


def move_paths(node, old: str, new: str):
    """A copy of ``node`` with every string that is ``old`` or a path under it moved to ``new``
    (``run_folder.rebase`` on a copy)."""
    return rebase(copy.deepcopy(node), old, new)


def seed_config(config: dict, seed: int, folder: str, config_file: str | None = None) -> dict:
    """``config`` with ``seed_everything: seed``, its run folder's paths moved to ``folder``, the W&B run
    named ``<name>-seed<seed>`` and grouped in ``<name>-seeds`` (a group the config names is kept).
    ``<name>``: the logger's name, else the stem of ``config_file`` (the seeds' config), else the run folder's."""
    from lightning_ssb.cli import is_wandb_logger, run_name

    old = _norm(str(config["trainer"].get("default_root_dir") or "."))
    out = move_paths(config, old, _norm(folder))
    out["seed_everything"] = seed
    out["trainer"]["default_root_dir"] = folder
    for logger in _as_list(out["trainer"].get("logger")):
        args = logger.get("init_args") if isinstance(logger, dict) else None
        if args is None or not is_wandb_logger(logger):
            continue
        base = args.get("name") or run_name(config_file, None, old)
        args["name"] = f"{base}-seed{seed}"
        args["group"] = args.get("group") or f"{base}-seeds"
    return out


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value in (None, False, True) else [value]


def run_seeds(fit_args: list[str], seeds: list[int], root: str | None = None, compare: bool = True) -> Path:
    """Fit once per seed into ``<root>/seed_<S>/`` and (with two seeds or more) compare them; returns root."""
    from lightning_ssb.cli import first_config, main

    folders = []
    for seed in seeds:
        args = [a.replace("{seed}", str(seed)) for a in fit_args]
        config = resolved_config(args)
        base = _norm(str(config["trainer"].get("default_root_dir") or "."))
        root = root or f"{base}_seeds"
        folder = os.path.join(root, f"seed_{seed}")
        config_file = first_config(args)
        print(f"lightning_ssb seeds: seed {seed} -> {folder}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"seed_{seed}.yaml"
            path.write_text(yaml.safe_dump(seed_config(config, seed, folder, config_file), sort_keys=False))
            main(["fit", "--config", str(path)])
        folders.append(folder)
    if compare and len(folders) > 1:
        from lightning_ssb.report.cli import compare_main

        code = compare_main([*folders, "--out", os.path.join(root, "compare")])
        if code:
            raise SystemExit(code)
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    del sys.argv[1:]  # the fits get their options as args; LightningCLI warns when sys.argv has others too
    args, fit_args = parser().parse_known_args(argv)
    seeds = args.seeds if args.seeds is not None else [args.seed_everything]
    if len(set(seeds)) != len(seeds):
        print(f"lightning_ssb: error: --seeds: each seed once, got {seeds}", file=sys.stderr)
        return 2
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in fit_args):
        print("lightning_ssb: error: seeds needs --config (the fit config every seed runs)", file=sys.stderr)
        return 2
    run_seeds(fit_args, seeds, args.root, compare=not args.no_compare)
    return 0

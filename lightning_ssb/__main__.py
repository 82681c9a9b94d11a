"""``python -m lightning_ssb ...`` and the ``lightning-ssb`` script: one dispatch for every subcommand.

``report`` and ``compare`` go to the report package (no Lightning needed), ``seeds`` to the seed loop,
everything else (``fit validate test predict analyze`` and ``--help``) to the Lightning CLI.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "report": "lightning_ssb.report.cli:main",
    "compare": "lightning_ssb.report.cli:compare_main",
    "seeds": "lightning_ssb.seed_runs:main",
}


def main(argv: list[str] | None = None) -> int | None:
    """Route ``argv`` (default ``sys.argv[1:]``) to its subcommand; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] and args[0] in COMMANDS:  # imported only when asked for: the report needs no Lightning
        import importlib

        module, function = COMMANDS[args[0]].split(":")
        return getattr(importlib.import_module(module), function)(args[1:])
    from lightning_ssb.cli import main as cli_main
    from lightning_ssb.cli import release_process_group

    cli_main(argv)  # None: LightningCLI reads sys.argv itself
    release_process_group()  # a torchrun rank's gloo group, before the interpreter's shutdown
    return 0


if __name__ == "__main__":
    sys.exit(main())

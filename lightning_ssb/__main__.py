"""``python -m lightning_ssb ...`` dispatches: ``report`` to the report, everything else to the Lightning CLI."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["report"]:  # before importing the CLI: the report needs no Lightning
        from lightning_ssb.report.cli import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    from lightning_ssb.cli import main

    main()

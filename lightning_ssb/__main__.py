"""``python -m lightning_ssb ...`` dispatches: ``report`` and ``compare`` to the report package, everything else to the Lightning CLI."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["report"]:  # before importing the CLI: the report needs no Lightning
        from lightning_ssb.report.cli import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    if sys.argv[1:2] == ["compare"]:  # disk results only, like the report
        from lightning_ssb.report.cli import compare_main

        sys.exit(compare_main(sys.argv[2:]))
    if sys.argv[1:2] == ["seeds"]:  # one fit per seed into sibling run folders, then compare
        from lightning_ssb.seeds import main as seeds_main

        sys.exit(seeds_main(sys.argv[2:]))
    from lightning_ssb.cli import main

    main()

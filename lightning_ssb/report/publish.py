"""The report at the end of fit: written from the run's disk results, its path printed, handed to the sinks."""

from __future__ import annotations

import warnings


def publish_report(dirpath: str, sinks: list) -> tuple[str | None, dict]:
    """Write ``dirpath``'s report, print its path and give it to every sink (W&B: an HTML panel).

    Returns (the report's path, or None when it could not be written; {sink: message} of the sinks
    that failed to take it). A failure is a warning, never an error: the results are on disk and
    ``python -m lightning_ssb report`` rebuilds the page from them.
    """
    from lightning_ssb.report import write_report

    try:  # PNG figures only: the page embeds them; `python -m lightning_ssb report` adds the SVGs
        path = str(write_report(dirpath, svg=False))
    except Exception as err:  # noqa: BLE001 - never costs the run
        warnings.warn(f"SSBMonitor: the report could not be written ({err}); "
                      f"`python -m lightning_ssb report {dirpath}` builds it from the disk results", stacklevel=2)
        return None, {}
    print(f"lightning_ssb: report: {path}", flush=True)
    failed = {}
    for sink in sinks:
        try:
            sink.log_report(path)
        except Exception as err:  # noqa: BLE001
            failed[sink] = f"the {sink.name} sink could not log the report: {err}"
            warnings.warn(f"SSBMonitor: {failed[sink]}", stacklevel=2)
    return path, failed

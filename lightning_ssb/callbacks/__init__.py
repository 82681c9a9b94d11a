"""Lightning callbacks that watch symmetry breaking live: capture hooks, probe set, the monitor, custom analyses.

Results (``EpochSnapshot`` -> ``EpochResult``) and sinks live in ``lightning_ssb.results``; they are
re-exported here so that earlier imports keep working.
"""

from lightning_ssb.callbacks.custom import AnalysisOutput, NodalAnalysis
from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeConfig, ProbeSet, build_probe_set
from lightning_ssb.callbacks.resume import InterruptCheckpoint, RNGState
from lightning_ssb.capture import capture_batches, capture_sites, snapshot_name, snapshot_names
from lightning_ssb.results.build import EpochResult, EpochSnapshot
from lightning_ssb.results.sinks import DiskSink, LoggerSink, Sink, WandbSink

__all__ = [
    "AnalysisOutput", "DiskSink", "EpochResult", "EpochSnapshot", "InterruptCheckpoint", "LoggerSink", "RNGState",
    "NodalAnalysis", "ProbeConfig", "ProbeSet", "SSBMonitor", "Sink", "WandbSink", "build_probe_set",
    "capture_batches", "capture_sites", "snapshot_name", "snapshot_names",
]

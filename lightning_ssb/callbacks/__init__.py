"""Lightning callbacks that watch symmetry breaking live: capture, probe set, monitor, sinks, custom analyses."""

from lightning_ssb.callbacks.capture import capture_batches, capture_sites, snapshot_name, snapshot_names
from lightning_ssb.callbacks.custom import EpochSnapshot, NodalAnalysis
from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeSet, build_probe_set
from lightning_ssb.callbacks.sinks import DiskSink, LoggerSink, Sink, WandbSink

__all__ = [
    "DiskSink", "EpochSnapshot", "LoggerSink", "NodalAnalysis", "ProbeSet", "SSBMonitor", "Sink", "WandbSink",
    "build_probe_set", "capture_batches", "capture_sites", "snapshot_name", "snapshot_names",
]

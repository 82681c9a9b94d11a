"""Moved to ``lightning_ssb.results.sinks``; kept so that old imports work."""

from lightning_ssb.results.sinks import DiskSink, LoggerSink, Sink, SinkError, WandbSink, epoch_dirname

BaseSink = Sink

__all__ = ["BaseSink", "DiskSink", "LoggerSink", "Sink", "SinkError", "WandbSink", "epoch_dirname"]

"""Sinks: the disk layout (never overwritten), any Lightning logger, a real offline W&B run, and failures."""

import csv
import json
import os

import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_ssb.callbacks.figures import heatmap
from lightning_ssb.loggers.wandb_records import read_wandb_run
from lightning_ssb.plots import to_png
from lightning_ssb.results.build import EpochResult
from lightning_ssb.results.sinks import DiskSink, LoggerSink, Sink, WandbSink, log_results_all, prepare_all, write_all


def _emit(sink, epoch, step, value):
    fig = heatmap(torch.rand(3, 4), "t", "head", "layer")
    sink.begin(epoch, step)
    sink.log_scalars({"ssb/blocks.0.attn.heads/own/node/phi": value, "ssb/epoch": float(epoch)}, step)
    sink.log_figure("ssb/heads/accuracy", fig, step)
    sink.log_table("nodes", ["layer", "node", "learned_labels"], [[0, 1, "capital_of born_in"]], step)
    sink.log_arrays({"blocks.0.attn.heads/shared/node/accuracy": torch.full((2, 3), value)}, step)
    sink.flush(step)


def test_disk_sink_layout_and_no_overwrite(tmp_path):
    sink = DiskSink(str(tmp_path))
    _emit(sink, -1, 0, 0.25)
    _emit(sink, 0, 10, 0.5)
    _emit(sink, 0, 10, 0.75)  # the same epoch again (a re-run): kept beside, not over, the first
    assert sorted(os.listdir(tmp_path)) == ["epoch_000", "epoch_000-1", "reference"]
    ref = tmp_path / "reference"
    assert sorted(os.listdir(ref)) == ["arrays.pt", "nodes.csv", "scalars.json", "ssb__heads__accuracy.png"]
    assert json.loads((ref / "scalars.json").read_text())["ssb/blocks.0.attn.heads/own/node/phi"] == 0.25
    assert json.loads((tmp_path / "epoch_000" / "scalars.json").read_text())["step"] == 10
    second = json.loads((tmp_path / "epoch_000-1" / "scalars.json").read_text())
    assert second["ssb/blocks.0.attn.heads/own/node/phi"] == 0.75
    assert (ref / "ssb__heads__accuracy.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader(open(ref / "nodes.csv")))
    assert rows == [["layer", "node", "learned_labels"], ["0", "1", "capital_of born_in"]]
    arrays = torch.load(tmp_path / "epoch_000" / "arrays.pt")
    assert torch.equal(arrays["blocks.0.attn.heads/shared/node/accuracy"], torch.full((2, 3), 0.5))
    assert sink.has(0) and sink.has(-1) and not sink.has(1)


def test_disk_sink_writes_over_an_incomplete_folder(tmp_path):
    (tmp_path / "epoch_002").mkdir()  # a run stopped while writing: no scalars.json yet
    (tmp_path / "epoch_002" / "arrays.pt").write_bytes(b"half")
    sink = DiskSink(str(tmp_path))
    assert not sink.has(2)
    _emit(sink, 2, 30, 0.5)
    assert sorted(os.listdir(tmp_path)) == ["epoch_002"] and sink.has(2)
    assert torch.load(tmp_path / "epoch_002" / "arrays.pt")["blocks.0.attn.heads/shared/node/accuracy"][0, 0] == 0.5


def test_logger_sink_any_lightning_logger(tmp_path):
    logger = CSVLogger(str(tmp_path), name="x", version=0)
    _emit(LoggerSink(logger), 1, 7, 0.5)
    logger.save()
    rows = list(csv.DictReader(open(tmp_path / "x" / "version_0" / "metrics.csv")))
    assert rows[0]["step"] == "7" and float(rows[0]["ssb/blocks.0.attn.heads/own/node/phi"]) == 0.5


def test_wandb_sink_offline_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="ssb-test", dir=str(tmp_path), mode="offline")
    sink = WandbSink(run)
    _emit(sink, -1, 0, 0.25)
    _emit(sink, 0, 12, 0.5)
    run.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = read_wandb_run(run_dir, wait=60)
    # the W&B layout: section "ssb-phi", the site without dots; plotted against ssb/epoch, declared once
    assert records.series("ssb-phi/own/node/L00-attn-heads") == [0.25, 0.5]
    assert not any("blocks." in k for k in records.keys())
    assert records.step_metrics == {"ssb-phi/own/node/L00-attn-heads": "ssb/epoch"}
    assert records.series("trainer/global_step") == [0, 12]  # one history row per epoch result
    assert records.series("ssb/epoch") == [-1.0, 0.0]
    images = list((run_dir / "files" / "media" / "images" / "ssb-figures" / "accuracy").glob("heads_*.png"))
    assert len(images) == 2
    (table,) = list((run_dir / "files" / "media" / "table" / "ssb").glob("nodes_0_*.table.json"))  # ssb/nodes
    assert json.loads(table.read_text())["data"] == [[0, 1, "capital_of born_in"]]


def test_wandb_sink_prepared_on_another_thread_logs_the_same_run(tmp_path, monkeypatch):
    """The images and tables made by ``prepare`` on a worker thread, then logged by ``write``: the run holds
    each figure's PNG byte for byte (copied, not encoded again) and the table's rows, and the files made for
    the images are gone once the result is logged. A prepare that fails leaves the write to do it all."""
    import threading

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="ssb-test", dir=str(tmp_path), mode="offline")
    sink = WandbSink(run)
    results = []
    for epoch, value in ((-1, 0.25), (0, 0.5)):
        fig = heatmap(torch.rand(3, 4), f"epoch {epoch}", "head", "layer")
        results.append(EpochResult(epoch=epoch, step=10 * (epoch + 1), figures={"ssb/heads/accuracy": fig},
                                   scalars={"ssb/blocks.0.attn.heads/own/node/phi": value, "ssb/epoch": float(epoch)},
                                   tables={"nodes": (["layer", "node", "labels"], [[0, epoch + 2, "born_in"]])}))
    worker = threading.Thread(target=prepare_all, args=([sink], results[0]))
    worker.start()
    worker.join()
    media = results[0].prepared[sink]
    folder = media._folder.name
    assert os.listdir(folder) == ["0.png"]

    class Unprepared(WandbSink):
        def prepare(self, result):
            raise OSError("no space left for the image files")

    prepare_all([Unprepared(run)], results[1])
    assert results[1].prepared == {}  # the write below makes its images and tables itself
    assert write_all([sink], results[0]) == [] and write_all([sink], results[1]) == []
    run.finish()
    assert not os.path.exists(folder)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = read_wandb_run(run_dir, wait=60)
    assert records.series("ssb-phi/own/node/L00-attn-heads") == [0.25, 0.5]
    assert records.series("trainer/global_step") == [0, 10]
    images = sorted((run_dir / "files" / "media" / "images" / "ssb-figures" / "accuracy").glob("heads_*.png"),
                    key=lambda p: int(p.name.split("_")[1]))
    assert [p.read_bytes() for p in images] == [to_png(r.figures["ssb/heads/accuracy"]) for r in results]
    tables = sorted((run_dir / "files" / "media" / "table" / "ssb").glob("nodes_*.table.json"),
                    key=lambda p: int(p.name.split("_")[1]))
    assert [json.loads(t.read_text())["data"] for t in tables] == [[[0, 1, "born_in"]], [[0, 2, "born_in"]]]


def test_wandb_sink_logs_the_results_folder_as_an_artifact_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # where offline artifacts are staged
    import wandb

    results = tmp_path / "ssb" / "run1"
    disk = DiskSink(str(results))
    _emit(disk, -1, 0, 0.25)
    _emit(disk, 0, 12, 0.5)
    (results / "report.html").write_text("<html>report</html>")
    on_disk = {str(p.relative_to(results)): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert len(on_disk) == 9  # 2 x (scalars, arrays, nodes, figure) + the report
    run = wandb.init(project="ssb-test", dir=str(tmp_path), mode="offline")
    failed = log_results_all([WandbSink(run), disk], str(results))
    run.finish()
    assert failed == []
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (artifact,) = read_wandb_run(run_dir, wait=60).artifacts
    assert artifact["name"] == f"ssb-results-{run.id}" and artifact["type"] == "ssb-results"
    assert artifact["metadata"]["states"] == ["epoch_000", "reference"]
    assert sorted(artifact["files"]) == sorted(on_disk)
    for path, staged in artifact["files"].items():  # staged copies: a later change of the folder cannot corrupt them
        assert open(staged, "rb").read() == on_disk[path], path


def test_a_failing_artifact_upload_is_one_message_naming_the_folder(tmp_path):
    class Run:
        id = "abc123"
        dir = "nowhere"

        def log_artifact(self, artifact):
            raise ConnectionError("service unreachable")

    (tmp_path / "reference").mkdir()
    failed = log_results_all([WandbSink(Run())], str(tmp_path))
    assert [m for _, m in failed] == [f"the wandb sink could not log the results folder {tmp_path}: "
                                      "ConnectionError: service unreachable"]


class Broken(Sink):
    """A sink whose backend is down."""

    name = "wandb"

    @property
    def where(self) -> str:
        return "run abc123"

    def flush(self, step: int) -> None:
        raise ConnectionError("service unreachable")


def test_a_failing_sink_costs_nothing_of_the_others_and_names_itself(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    if os.access(readonly, os.W_OK):  # root ignores permission bits: a file where the folder must go
        readonly.chmod(0o700)
        readonly = tmp_path / "file"
        readonly.write_text("not a folder")
    good = DiskSink(str(tmp_path / "good"))
    bad = DiskSink(str(readonly / "ssb"))
    result = EpochResult(epoch=0, step=5, scalars={"ssb/epoch": 0.0}, arrays={"a": torch.ones(2)})
    failed = write_all([bad, Broken(), good], result)
    assert [s for s, _ in failed] == [bad, failed[1][0]] and isinstance(failed[1][0], Broken)
    assert failed[0][1].startswith(f"the disk sink could not write {readonly / 'ssb' / 'epoch_000'}: ")
    assert failed[1][1] == "the wandb sink could not write run abc123: ConnectionError: service unreachable"
    assert json.loads((tmp_path / "good" / "epoch_000" / "scalars.json").read_text())["ssb/epoch"] == 0.0


def test_disk_full_is_reported_with_the_folder(tmp_path, monkeypatch):
    sink = DiskSink(str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    ((s, message),) = write_all([sink], EpochResult(epoch=3, step=9, arrays={"a": torch.ones(1)}))
    assert message == (f"the disk sink could not write {tmp_path / 'epoch_003'}: "
                       "OSError: [Errno 28] No space left on device")
    assert not sink.has(3)  # scalars.json (the completion mark) was never written

"""Issue 17, item 2: the MLM probe is consistent with the model it probes.

A small BERT is pre-trained here with masked language modelling on real Wikipedia text (the shared
data's two files) until its own masked-token accuracy on the probe is well above the majority rate. Then:

1. The probe's examples, labels and top-K classes equal a brute-force recomputation from the raw
   articles and the probe's masked inputs (every [MASK] position, its original token, the K tokens most
   often masked in probe-train that also occur in probe-test), and ``probe_accuracy`` equals the
   model's accuracy recomputed from its full ``[B, T, V]`` logits at those positions.
2. The whole-site shared read-out of the last layer's output site (``blocks.{L-1}.output``, fitted by
   ``lightning_ssb.analysis.fit_readout`` on probe-train) scores on probe-test close to the model's own
   restricted accuracy on the same positions and labels; the tolerance is derived in
   ``readout_tolerance``. Were positions, labels or the top-K remapping wrong, the read-out would
   sit at the majority rate while the model does not.
"""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
import pytest
import torch

from lightning_ssb.analysis import fit_readout
from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.capture import capture_probe
from lightning_ssb.data import WikipediaDataModule
from lightning_ssb.models import BertArchitecture, MLMModule, OptimizerConfig
from lightning_ssb.probe_accuracy import probe_accuracy, probe_predictions
from tests.mlm_recount import own_predictions, recount

pytestmark = pytest.mark.slow

K = 50  # the top-50 probe
SEQ_LEN = 64
# a small BERT that leaves the unigram plateau within two epochs over the shared Wikipedia text (about
# 2 minutes here): measured with benchmarks/tokens_search.py, 2 x 128 at lr 1e-3 reaches 1.47x the
# majority rate after 730 steps, where 4 x 64 reaches 1.22x; a deeper, wider model needs many more steps
ARCH = BertArchitecture(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
EPOCHS = 2
PROBE_TRAIN = None  # every training sequence: about 35,000 examples for a read-out of 128 x 50 weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """(module, data module, probe): the shared Wikipedia text, a model trained on it, the monitor's probe."""
    sources = [str(shared_data / f"enwiki_2015_wikiextractor_{part}.txt.gz") for part in ("AA", "AB")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIGHTNING_SSB_CACHE", str(tmp_path_factory.mktemp("cache")))
        L.seed_everything(0, verbose=False)
        dm = WikipediaDataModule(source=sources, max_length=SEQ_LEN, val_fraction=0.1, batch_size=32, seed=0)
        module = MLMModule(architecture=ARCH, optimizer=OptimizerConfig(lr=1e-3, warmup=0.06))
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, gradient_clip_val=1.0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(module, datamodule=dm)
    probe = ProbeConfig(train_size=PROBE_TRAIN, test_size=None, top_k_tokens=K, seed=0).build(dm, "mlm")
    return module, dm, probe


def readout_tolerance(readout_correct: torch.Tensor, own_correct: torch.Tensor, finite_sample_gap: float) -> float:
    """How far the read-out's accuracy may lie from the model's own on the same n probe-test examples.

    - Sampling: both are means over the same n examples, so their difference is the mean of
      d_i = [read-out right] - [model right] in {-1, 0, 1}; Var(d_i) <= P(d_i != 0) = the share of
      discordant examples (McNemar). Three standard errors: 3 * sqrt(discordant / n).
    - Finite sample: the read-out is fitted on probe-train (D x K weights on a few thousand examples), so
      it scores below the best linear read-out of the site by about its own train-test gap, added as is.
    Nothing else separates them when the probe is right: the model's MLM head reads the same hidden
    state (blocks.{L-1}.output) at the same positions, and its argmax over the K class tokens is itself
    a read-out of that state (a linear map after one dense + GELU + LayerNorm transform).
    """
    n = readout_correct.numel()
    discordant = (readout_correct != own_correct).float().mean().item()
    return 3 * math.sqrt(discordant / n) + max(finite_sample_gap, 0.0)


def test_probe_examples_labels_and_classes_equal_a_recount(trained):
    module, dm, probe = trained
    top, examples = recount(dm, probe, K)
    assert probe.class_ids == top  # the top-K remapping: class k is the k-th most often masked token
    assert probe.label_names == dm.tokenizer.convert_ids_to_tokens(top)
    class_of = {t: k for k, t in enumerate(top)}
    for split, batches in (("train", probe.train_batches), ("test", probe.test_batches)):
        where = [(b, int(r), int(t)) for b, batch in enumerate(batches)
                 for r, t in zip(batch.rows.tolist(), batch.positions.tolist(), strict=True)]
        assert where == [e[:3] for e in examples[split]], split  # the positions: every [MASK] on a class token
        labels = torch.cat([batch.labels for batch in batches]).tolist()
        assert labels == [class_of[e[3]] for e in examples[split]], split  # labelled by the original token


def test_probe_accuracy_equals_the_models_full_logits(trained):
    module, dm, probe = trained
    top, examples = recount(dm, probe, K)
    tokens = torch.tensor([e[3] for e in examples["test"]])
    restricted, full = own_predictions(module, probe, examples["test"], top)
    score = probe_accuracy(module.model, probe)
    n = len(tokens)
    assert score.n == n
    # the same argmaxes up to float rounding in a near-tie (the head runs on n rows there, B x T here)
    assert abs(score.restricted - (restricted == tokens).float().mean().item()) <= 1 / n
    assert abs(score.full - (full == tokens).float().mean().item()) <= 1 / n
    assert score.majority == Counter(tokens.tolist()).most_common(1)[0][1] / n
    # trained far enough for the next test to mean something: off the unigram plateau, by more than five
    # binomial standard errors of the score above always answering the most frequent token
    assert score.restricted - score.majority > 5 * math.sqrt(score.majority * (1 - score.majority) / n), score


def test_last_layer_shared_readout_scores_the_models_own_accuracy(trained):
    module, dm, probe = trained
    last = module.model.config.num_hidden_layers - 1
    site = f"blocks.{last}.output"
    x_train, y_train, x_test, y_test = capture_probe(module.model, probe, [last], ["output"])
    assert torch.equal(y_train, probe.y_train) and torch.equal(y_test, probe.y_test)
    x_train, x_test = x_train[site][:, 0], x_test[site][:, 0]  # [N, 1, D] -> [N, D]
    restricted, _, labels = probe_predictions(module.model, probe)
    assert torch.equal(labels, y_test)
    own_correct = restricted == y_test
    own = own_correct.float().mean().item()
    majority = torch.bincount(y_test).max().item() / len(y_test)
    for bias in (False, True):  # the monitor's shared read-out has no bias by default
        readout = fit_readout(x_train, y_train, K, bias=bias)
        correct = readout.fields(x_test).argmax(-1) == y_test
        acc = correct.float().mean().item()
        train_acc = (readout.fields(x_train).argmax(-1) == y_train).float().mean().item()
        tolerance = readout_tolerance(correct, own_correct, train_acc - acc)
        print(f"bias={bias}: read-out {acc:.3f} (train {train_acc:.3f}), model {own:.3f}, majority {majority:.3f}, "
              f"tolerance {tolerance:.3f}, n = {len(y_test)}")
        assert abs(acc - own) <= tolerance, (bias, acc, own, tolerance)
        assert acc > majority + tolerance  # and not by both sitting at the majority rate

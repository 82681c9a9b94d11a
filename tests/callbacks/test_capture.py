"""Capture hooks: names, values against a manual recomputation, pooling, clean-up."""

import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from lightning_ssb.callbacks.probe import ProbeBatch
from lightning_ssb.capture import capture_batches, capture_sites, select_positions, snapshot_names


def tiny_bert(cls=BertForSequenceClassification, attn="eager", layers=6, hidden=64, heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=5,
                     attn_implementation=attn)
    return cls(cfg).eval()


def random_batch(B=3, T=9, vocab=120, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0  # padding in one row: the manual recomputation must respect the mask
    ids[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_snapshot_names_bert6():
    assert snapshot_names(list(range(6)), ["attn.heads", "output"]) == [
        "blocks.0.attn.heads", "blocks.0.output", "blocks.1.attn.heads", "blocks.1.output",
        "blocks.2.attn.heads", "blocks.2.output", "blocks.3.attn.heads", "blocks.3.output",
        "blocks.4.attn.heads", "blocks.4.output", "blocks.5.attn.heads", "blocks.5.output",
    ]
    model = tiny_bert()
    batch = random_batch()
    with capture_sites(model, list(range(6)), ["attn.heads", "output"]) as cap:
        cap.select(torch.arange(3), torch.zeros(3, dtype=torch.long))
        model(**batch)
    tensors = cap.tensors()
    assert list(tensors) == snapshot_names(list(range(6)), ["attn.heads", "output"])
    assert tensors["blocks.5.attn.heads"].shape == (3, 4, 16)
    assert tensors["blocks.5.output"].shape == (3, 1, 64)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_heads_equal_manual_attention(attn):
    model = tiny_bert(attn=attn, layers=3)
    batch = random_batch()
    rows, positions = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 5, 8])
    with torch.no_grad(), capture_sites(model, [1, 2], ["attn.heads", "output"]) as cap:
        cap.select(rows, positions)
        out = model.bert(**batch, output_hidden_states=True)
    got = cap.tensors()
    hidden = out.hidden_states
    for layer in (1, 2):
        att = model.bert.encoder.layer[layer].attention.self
        x = hidden[layer]  # input of layer `layer`
        B, T, _ = x.shape
        H, d = 4, 16
        q = att.query(x).view(B, T, H, d).transpose(1, 2)
        k = att.key(x).view(B, T, H, d).transpose(1, 2)
        v = att.value(x).view(B, T, H, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(batch["attention_mask"][:, None, None, :] == 0, float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2)  # [B, T, H, d]
        torch.testing.assert_close(got[f"blocks.{layer}.attn.heads"], ctx[rows, positions], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got[f"blocks.{layer}.output"][:, 0], hidden[layer + 1][rows, positions])


def test_select_positions_rules():
    MASK = 103
    labels_mlm = torch.full((2, 6), -100)
    labels_mlm[0, 2], labels_mlm[0, 4], labels_mlm[1, 1], labels_mlm[1, 3], labels_mlm[1, 5] = 50, 7, 50, 50, 50
    inputs = torch.full((2, 6), 60)
    inputs[0, 2], inputs[0, 4], inputs[1, 1] = MASK, MASK, MASK
    inputs[1, 3] = 99  # chosen, replaced by a random token: not an example
    # (1, 5) chosen and left unchanged (input 60): not an example either
    class_of_token = torch.full((120,), -1)
    class_of_token[50] = 0  # token 7 is outside the label set: dropped
    batch_mlm = {"labels": labels_mlm, "input_ids": inputs}
    rows, pos, y = select_positions(batch_mlm, "masked", class_of_token, mask_token_id=MASK)
    assert rows.tolist() == [0, 1] and pos.tolist() == [2, 1] and y.tolist() == [0, 0]
    rows, pos, y = select_positions(batch_mlm, "masked", mask_token_id=MASK)  # no label set: token ids
    assert rows.tolist() == [0, 0, 1] and pos.tolist() == [2, 4, 1] and y.tolist() == [50, 7, 50]
    with pytest.raises(ValueError, match="mask_token_id"):
        select_positions(batch_mlm, "masked", class_of_token)
    batch = {"labels": torch.tensor([3, 1]), "head_pos": torch.tensor([4, 2])}
    rows, pos, y = select_positions(batch, "head_entity")
    assert rows.tolist() == [0, 1] and pos.tolist() == [4, 2] and y.tolist() == [3, 1]
    rows, pos, y = select_positions(batch, "cls")
    assert pos.tolist() == [0, 0]
    with pytest.raises(ValueError, match="position rule"):
        select_positions(batch, "middle")


def test_hooks_removed_on_error():
    model = tiny_bert(layers=2)
    dense = model.bert.encoder.layer[0].attention.output.dense
    with pytest.raises(RuntimeError, match="select"):
        with capture_sites(model, [0, 1], ["attn.heads", "output"]):
            model(**random_batch())  # no select() -> the hook raises
    assert not dense._forward_pre_hooks
    assert not model.bert.encoder.layer[1]._forward_hooks


def test_capture_batches_restores_mode_and_stops_early():
    model = tiny_bert(cls=BertForMaskedLM, layers=4).train()
    batch = random_batch()
    pb = ProbeBatch(batch, torch.tensor([0, 2]), torch.tensor([3, 1]), torch.tensor([1, 0]))

    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    before = hooks()
    calls = []
    top = model.bert.encoder.layer[3].register_forward_hook(lambda *a: calls.append(1))
    tensors, y = capture_batches(model, [pb, pb], [0, 1], ["attn.heads", "output"])
    top.remove()
    assert hooks() == before
    assert model.training and not calls  # layer 3 never ran: the pass stopped after layer 1
    assert y.tolist() == [1, 0, 1, 0]
    with torch.no_grad():
        ref = model.eval().bert(**batch, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(tensors["blocks.1.output"][:2, 0], ref[[0, 2], [3, 1]])


def test_heads_only_capture_stops_before_the_deepest_feed_forward():
    """Without an `output` site, the deepest layer runs up to its attention context only: its output
    projection and feed-forward block never run, and the heads equal a full forward's."""
    model = tiny_bert(layers=3)
    batch = random_batch()
    pb = ProbeBatch(batch, torch.tensor([0, 1, 2]), torch.tensor([0, 4, 7]), torch.tensor([0, 1, 0]))
    deepest = model.bert.encoder.layer[1]
    calls = []
    handles = [deepest.attention.output.dense.register_forward_hook(lambda *a: calls.append("projection")),
               deepest.intermediate.register_forward_hook(lambda *a: calls.append("feed-forward"))]
    tensors, _ = capture_batches(model, [pb], [0, 1], ["attn.heads"])
    for h in handles:
        h.remove()
    assert calls == []
    with torch.no_grad(), capture_sites(model, [0, 1], ["attn.heads"]) as cap:
        cap.select(pb.rows, pb.positions)
        model.eval().bert(**batch)
    for name, full in cap.tensors().items():
        torch.testing.assert_close(tensors[name], full)


def test_capture_share_installs_hooks_once_and_splits_per_batch(monkeypatch):
    from lightning_ssb import capture

    model = tiny_bert(layers=2)
    batches = [ProbeBatch(random_batch(seed=s), torch.arange(3), torch.tensor([0, 2, 4]), torch.tensor([s, 1, 2]))
               for s in range(3)]
    installs = []
    real = capture.SiteCapture.install
    monkeypatch.setattr(capture.SiteCapture, "install", lambda self: (installs.append(1), real(self)))
    # rank 1 of 2 owns batch 1 only; rank 0 owns batches 0 and 2 (uneven shares), each in one pass
    share0 = capture.capture_share(model, batches, [1], ["attn.heads"], rank=0, world=2)
    share1 = capture.capture_share(model, batches, [1], ["attn.heads"], rank=1, world=2)
    assert len(installs) == 2
    assert [c[0] for c in share0] == [0, 2] and [c[0] for c in share1] == [1]
    x, y = capture.join_chunks(share1 + share0, ["blocks.1.attn.heads"])  # any arrival order
    whole, y_whole = capture_batches(model, batches, [1], ["attn.heads"])
    assert y.tolist() == y_whole.tolist() == [0, 1, 2, 1, 1, 2, 2, 1, 2]
    torch.testing.assert_close(x["blocks.1.attn.heads"], whole["blocks.1.attn.heads"])

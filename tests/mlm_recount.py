"""Brute-force recomputations of the MLM probe and of the model's own accuracy on it, independent of
``lightning_ssb.callbacks.probe`` (positions, labels, top-K) and of ``lightning_ssb.probe_accuracy``."""

from __future__ import annotations

from collections import Counter

import torch


def recount(dm, probe, k: int | None = None):
    """The probe's examples from scratch: every [MASK] of the probe's fixed inputs, mapped back to its
    article (batches hold the probe's sequences sorted by length, then index) and labelled by the
    article's original token; the top-K tokens counted by hand.

    Returns (top-K token ids, {split: [(batch, row, position, token)] of the examples on them})."""
    mask_id = dm.tokenizer.mask_token_id
    found = {}
    for split, dataset, indices, batches in (("train", dm.train_dataset, probe.train_indices, probe.train_batches),
                                             ("test", dm.val_dataset, probe.test_indices, probe.test_batches)):
        order = sorted(indices, key=lambda i: (len(dataset[i]["input_ids"]), i))
        rows, start, same, shown_total = [], 0, 0, 0
        for b, batch in enumerate(batches):
            ids = batch.inputs["input_ids"]
            for r in range(ids.shape[0]):
                original = dataset[order[start + r]]["input_ids"]
                shown = ids[r, : len(original)].tolist()
                assert ids[r, len(original):].eq(dm.tokenizer.pad_token_id).all()  # the row is this article
                rows.extend((b, r, t, tok) for t, (s, tok) in enumerate(zip(shown, original, strict=True))
                            if s == mask_id)
                same += sum(s == tok for s, tok in zip(shown, original, strict=True) if s != mask_id)
                shown_total += sum(s != mask_id for s in shown)
            start += ids.shape[0]
        assert start == len(indices)
        # outside the [MASK]s only the 10% random replacements (1.5% of the tokens) differ from the article
        assert same / shown_total > 0.97, (split, same / shown_total)
        found[split] = rows
    counts = Counter(tok for *_, tok in found["train"])
    in_test = {tok for *_, tok in found["test"]}
    ranked = sorted(((c, t) for t, c in counts.items() if t in in_test), key=lambda ct: (-ct[0], ct[1]))
    top = [t for _, t in ranked[:k or len(probe.class_ids)]]
    keep = set(top)
    return top, {s: [e for e in rows if e[3] in keep] for s, rows in found.items()}


@torch.no_grad()
def own_predictions(module, probe, examples, class_ids):
    """The model's restricted and full-vocabulary predictions (token ids) at ``examples``, from its
    full ``[B, T, V]`` logits (``MLMModule.forward``: the MLM head at every position)."""
    ids = torch.tensor(class_ids)
    restricted, full = [], []
    module.eval()
    try:
        for b, batch in enumerate(probe.test_batches):
            logits = module(**batch.inputs)
            for _, r, t, _ in (e for e in examples if e[0] == b):
                restricted.append(int(ids[logits[r, t, ids].argmax()]))
                full.append(int(logits[r, t].argmax()))
    finally:
        module.train()
    return torch.tensor(restricted), torch.tensor(full)

"""The probe set is a function of (seed, indices): the same after a rebuild, with fixed MLM masks."""

from collections import Counter

import torch

from lightning_ssb.callbacks.probe import build_probe_set
from tests.callbacks.toys import MASK, ToyClassificationData, ToyMLMData


def _build(dm, **kw):
    args = dict(task=dm.task, position_rule="masked" if dm.task == "mlm" else "cls", train_size=40,
                test_size=20, seed=3, batch_size=8, top_k=5)
    args.update(kw)
    return build_probe_set(dm, **args)


def test_classification_probe_is_seeded_and_labelled():
    dm = ToyClassificationData()
    dm.setup("fit")
    a, b = _build(dm), _build(dm)
    assert a.train_indices == b.train_indices and len(set(a.train_indices)) == 40
    assert _build(dm, seed=4).train_indices != a.train_indices
    # labels are the dataset's, in batch order (batches are sorted by length, then index)
    order = sorted(a.train_indices, key=lambda i: (len(dm.train_dataset[i]["input_ids"]), i))
    assert a.y_train.tolist() == [dm.train_dataset[i]["label"] for i in order]
    assert a.num_classes == 4 and a.label_names[2] == "relation_2"
    head = _build(dm, position_rule="head_entity")
    first = dm.train_dataset[order[0]]
    assert int(head.train_batches[0].positions[0]) == first["head_pos"]
    assert head.train_batches[0].inputs["input_ids"][0, first["head_pos"]] == 2000 + first["label"]


def test_mlm_probe_fixed_masks_and_top_k():
    dm = ToyMLMData()
    dm.setup("fit")
    a = _build(dm)
    rebuilt = _build(dm, train_size=10, test_size=5, seed=99, state=a.state_dict())  # a resume
    for x, y in zip(a.train_batches + a.test_batches, rebuilt.train_batches + rebuilt.test_batches, strict=True):
        assert torch.equal(x.inputs["input_ids"], y.inputs["input_ids"])
        assert torch.equal(x.positions, y.positions) and torch.equal(x.labels, y.labels)
    # top-K = the 5 tokens most often replaced by [MASK] in probe-train among those also masked
    # in probe-test, recounted by hand (the masks are drawn train batches first, then test)
    gen = torch.Generator().manual_seed(a.seed + 1)
    counts, in_test = Counter(), set()
    for ds, idx, target in ((dm.train_dataset, a.train_indices, "train"), (dm.val_dataset, a.test_indices, "test")):
        order = sorted(idx, key=lambda i: (len(ds[i]["input_ids"]), i))
        for s in range(0, len(order), 8):
            batch = dm.collate_fn([ds[i] for i in order[s:s + 8]], gen)
            labels = batch["labels"]
            tokens = labels[(labels != -100) & (batch["input_ids"] == MASK)].tolist()
            counts.update(tokens) if target == "train" else in_test.update(tokens)
    counts = Counter({t: c for t, c in counts.items() if t in in_test})
    expected = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    assert a.class_ids == expected
    assert a.label_names == dm.tokenizer.convert_ids_to_tokens(expected)
    # every example sits at a [MASK] input whose original token is one of the K classes
    n_kept = sum(counts[t] for t in expected)
    assert len(a.y_train) == n_kept and set(a.y_train.tolist()) == set(range(5))
    batch = a.train_batches[0]
    seen = batch.inputs["input_ids"][batch.rows, batch.positions]
    assert (seen == MASK).all()  # random-token and unchanged positions (10% + 10%) are not examples
    everything = _build(dm, top_k="all")
    assert everything.num_classes == len(counts) and len(everything.y_train) == sum(counts.values())


def test_stratified_subset_covers_every_class_evenly():
    import torch

    from lightning_ssb.callbacks.probe import stratified_subset

    labels = [i % 64 for i in range(2560)]  # 40 per class, like the quick-start FewRel split
    idx = stratified_subset(labels, 256, torch.Generator().manual_seed(0))
    assert len(idx) == len(set(idx)) == 256
    counts = [sum(labels[i] == c for i in idx) for c in range(64)]
    assert counts == [4] * 64  # 256 / 64, no class missed
    odd = stratified_subset(labels, 100, torch.Generator().manual_seed(1))
    counts = sorted(sum(labels[i] == c for i in odd) for c in range(64))
    assert len(odd) == 100 and counts[0] == 1 and counts[-1] == 2 and sum(counts) == 100
    assert odd == stratified_subset(labels, 100, torch.Generator().manual_seed(1))  # seeded
    # a class smaller than its quota gives all it has
    assert sorted(stratified_subset([0] * 10 + [1], 6, torch.Generator().manual_seed(0)))[-1] == 10

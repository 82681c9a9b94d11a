"""The W&B layout of the logged keys (results/keys.py): one workspace section per statistic, sites without
dots, and every W&B key read back to the disk key it came from."""

import pytest

from lightning_ssb.results.keys import figure_key, parse_wandb_key, site_from_tag, site_tag, wandb_figure_key, wandb_key
from tests.results.test_build import PINNED


def test_wandb_keys_written_out():
    assert wandb_key("ssb/blocks.0.attn.heads/own/node/phi") == "ssb-phi/own/node/L00-attn-heads"
    assert wandb_key("ssb/blocks.11.output/shared/head/live_fraction") == "ssb-live_fraction/shared/head/L11-output"
    assert wandb_key("ssb/blocks.2.attn.heads/shared/null_train/node/live") == (
        "ssb-null_train/live/shared/node/L02-attn-heads")
    assert wandb_key("ssb/blocks.2.attn.heads/shared/site/acc") == "ssb-acc/shared/site/L02-attn-heads"
    assert wandb_key("ssb/epoch") == "ssb/epoch" and wandb_key("ssb/analysis_seconds") == "ssb/analysis_seconds"
    assert wandb_key("ssb/unique_heads/blocks.1.attn.heads/count") == "ssb-custom-unique_heads/L01-attn-heads/count"
    assert wandb_key("x/blocks.0.attn.heads/own/node/phi", prefix="x") == "x-phi/own/node/L00-attn-heads"
    assert wandb_figure_key(figure_key("heads", "accuracy")) == "ssb-figures/accuracy/heads"
    assert wandb_figure_key(figure_key("blocks.3.attn.heads", "envelope")) == "ssb-figures/envelope/L03-attn-heads"
    assert site_tag("blocks.3.attn.heads") == "L03-attn-heads"
    assert site_from_tag("L03-attn-heads") == "blocks.3.attn.heads"


def test_every_key_of_a_run_has_one_wandb_key_in_a_statistic_section_and_reads_back():
    wandb = {wandb_key(k): k for k in PINNED}
    assert len(wandb) == len(PINNED)  # no two keys share a W&B key
    assert not any("." in k for k in wandb)  # W&B reads a dot as nesting
    sections = {k.split("/")[0] for k in wandb}
    stats = {k.rsplit("/", 1)[1] for k in PINNED if k.startswith("ssb/blocks.")}
    assert sections == {"ssb", "ssb-custom-count_live", "ssb-null_train", "ssb-null_both"} | {f"ssb-{s}" for s in stats}
    for w, key in wandb.items():
        assert parse_wandb_key(w) == key
    for fig in (figure_key("heads", "accuracy"), figure_key("blocks.10.output", "crossover")):
        assert parse_wandb_key(wandb_figure_key(fig)) == fig


@pytest.mark.parametrize("key, message", [
    ("ssb-phi/own/node/blocks.0", "not a W&B site tag"),
    ("ssb-phi/own/L00-attn-heads", "not a W&B statistic key"),
    ("other/x", "not a W&B key of this monitor"),
])
def test_a_key_that_is_no_wandb_key_is_one_error_naming_it(key, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_wandb_key(key)
    assert repr(key) in str(err.value)

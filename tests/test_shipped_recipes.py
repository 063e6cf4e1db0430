"""Every shipped model was made by the recipe its command runs today."""

import json

import pytest

from lmcourse.runs import named_runs, shipped_names
from lmcourse.shipped import CHECKPOINT_DIR


@pytest.mark.parametrize("name", shipped_names())
def test_the_manifest_records_the_recipe_that_rebuilds_the_model(name):
    entry = json.loads((CHECKPOINT_DIR / "manifest.json").read_text())[name]
    spec = named_runs()[name]
    # fields added to the configs since a model was saved take their defaults
    assert type(spec.model)(**entry["config"]) == spec.model, f"{name}: model config differs from named_runs()"
    assert type(spec.train)(**entry["train_config"]) == spec.train, f"{name}: train config differs from named_runs()"
    assert entry.get("renamed_copies", 0) == spec.renamed_copies
    assert entry["tokenizer"] == spec.tokenizer

"""`cnnrun options`: every key a user can set, its value and what it does, read from where each is stated once."""

import pytest

from cnnrun.commands.options import keys, options
from cnnrun.config import schema
from tests.conftest import cli


def test_options_lists_the_groups_an_option_and_its_keys_with_their_help():
    r = cli("options")
    assert r.returncode == 0 and "model: backbone, cnn3, cnn3pad, cnn4" in " ".join(r.stdout.split())
    r = cli("options", "model")
    assert r.returncode == 0 and "  cnn4: Four convolutions with BatchNorm" in r.stdout
    r = cli("options", "model=cnn4")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and "  model.name=cnn4" in lines and "  model.dropout=true" in lines
    assert "0.25 after conv blocks" in r.stdout  # the schema's help, no longer a YAML comment
    r = cli("options", "logger=mlflow")
    assert "  logger.mlflow.timeout=10" in r.stdout and "seconds per request" in r.stdout  # the class's Args
    assert all(len(line) <= 80 for line in cli("options", "trainer").stdout.splitlines()[1:])


@pytest.mark.parametrize("what, said", [("modle", "'modle' is not a config group"),
                                        ("model=cnn5", "model=cnn5 is not an option; expected one of backbone")])
def test_a_wrong_name_is_one_line(what, said):
    r = cli("options", what)
    assert r.returncode == 2 and said in r.stderr.strip().splitlines()[-1]


def test_every_key_of_every_option_says_what_it_does():
    """The comments moved from the YAML files into the schemas' docstrings: none was lost on the way."""
    silent = []
    for group in ("dataset", "model", "optimizer", "augment", "trainer", "logger", "output", "reference"):
        for name in (options(group) if group not in ("output", "reference") else [None]):
            if (group, name) in (("augment", "none"), ("model", "custom"), ("dataset", "custom")):
                continue  # nothing to set / only the user's own arguments
            for key, _, said in keys(group, name)[1]:
                if not said and not key.endswith(".name"):
                    silent.append(f"{group}={name}: {key}")
    assert not silent, silent


def test_no_option_restates_a_default_of_its_schema():
    from tests.test_config_and_models import OWN_FACTS, _restated

    found = _restated()
    # dataset=custom lists cnnrun's keys: it has no schema while composing (its other keys are the loader's,
    # given with +), so a key it did not list could not be set without +
    assert {(o, k) for o, k, v, d in found if v == d and not k.endswith(("name", "_target_"))
            and o != "dataset/custom"} == set()
    assert {(o, k) for o, k, v, d in found if v != d} == OWN_FACTS  # what an option says is its own
    assert schema.Trainer.__doc__.count("\n        ") >= 20  # the keys' help lives beside their types

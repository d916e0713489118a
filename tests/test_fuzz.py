"""A fuzzer keeps the config's promise: any key, any value, composed in-process as `cnnrun train KEY=VALUE` is,
ends in a valid config or in one line (CnnrunError without a newline), never in another exception.

Every leaf key of the configs that the options below compose (every group's keys present at once), with
values of every kind: integers past 64 bits, floats with NaN and infinities, booleans, unicode text, lists,
paths, interpolations and Hydra's own syntax. FUZZ_EXAMPLES=N runs more (the default keeps the suite quick).
"""

import os
from functools import cache

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import TINY, make_config

from cnnrun import CnnrunError
from cnnrun.config import checks

BASES = [  # option sets under which every key of the schema exists in the composed config
    ["model=resnet", "optimizer=sgd", "augment=[mixup,cutmix,flip,rotate,shift,shear,zoom,erasing]",
     "logger=[csv,tensorboard,mlflow]", "debug=profile"],
    ["model=cnn3", "dataset=folder", "dataset.path=/tmp", "optimizer=adam"],
    ["model=vgg16", "dataset=fashion", "model.weights=null"],
    ["model=mnist_cnn", "experiment=article001_cnn3pad_mirror"],
]


@cache
def leaves(i: int) -> dict[str, str]:
    """Every leaf key of base i, with its composed value written as an override's value."""
    cfg = OmegaConf.to_container(make_config(*BASES[i]), resolve=False)

    def walk(node, prefix=""):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                yield from walk(v, key + ".")
            else:
                yield key, written(v)

    return dict(sorted(walk(cfg)))


def written(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(written, v)) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{written(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


SPECIAL = ["null", "''", "\"\"", "/", "/etc/passwd", "../../..", "~", "${oc.env:HOME}", "${oc.env:NOPE_NOT_SET}",
           "${cnnrun_uid:}", "${hydra:runtime.cwd}", "${trainer.epochs}", "inf", "-inf", "nan", "1e309", "-0", "[]",
           "{}", "[1,2,3]", "[[1]]", "{a:1}", "true", "yes", "0x10", "1_000", "2**32", "choice(1,2)",
           "interval(0,1)", "range(3)", "glob(*)", "日本語", "\u200b", "a b", "a,b", "a=b", "'quoted'", "\\",
           "\N{PILE OF POO}", "-1", "99999999999999999999999", "1.5", "0.0", "+1"]
values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 300), st.floats(-2, 2, allow_nan=False)), max_size=4).map(
        lambda xs: "[" + ",".join(map(str, xs)) + "]"),
    st.sampled_from(SPECIAL),
)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
tried = {"inputs": 0, "accepted": 0, "refused": 0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,  # no shrinking: a failure is shown as drawn, at once
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(base=st.integers(0, len(BASES) - 1), data=st.data(), prefix=st.sampled_from(["", "", "", "+", "++", "~"]))
def test_any_key_with_any_value_is_a_valid_config_or_one_line(base, data, prefix):
    key = data.draw(st.sampled_from(sorted(leaves(base))))
    # now and then the key's own value (as `KEY=VALUE` writes it), so valid configs are reached however the keys change
    value = data.draw(st.one_of(values, st.just(leaves(base)[key]), st.just(leaves(base)[key])))
    override = f"{prefix}{key}" if prefix == "~" else f"{prefix}{key}={value}"
    tried["inputs"] += 1
    try:
        jobs = checks.check_jobs([*TINY, *BASES[base], override], multirun=True)
    except CnnrunError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(str(e))
        tried["refused"] += 1
        return
    assert jobs >= 1
    tried["accepted"] += 1


def test_the_fuzzer_tried_what_it_says():
    if tried["inputs"] == 0:
        pytest.skip("runs after the fuzzer in the same process")
    print(f"fuzzer: {tried['inputs']} inputs, {tried['accepted']} valid configs, {tried['refused']} one-line refusals")
    assert tried["accepted"] > 0 and tried["refused"] > 0  # both outcomes were reached: the inputs mean something


def test_a_value_with_line_breaks_is_refused_in_one_line_that_shows_them():
    with pytest.raises(CnnrunError) as e:
        checks.check_jobs([*TINY, "trainer.batch_size=6\n4\x16"])
    assert "\n" not in str(e.value) and "6\\n4\\x16" in str(e.value), str(e.value)

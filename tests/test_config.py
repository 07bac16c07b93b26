"""Config parsing: defaults ← YAML ← overrides ← flags, every value type-checked."""

import pytest
from hypothesis import given, settings, strategies as st

from samplewise.config import TrainConfig, load_config, parse_override
from samplewise.errors import SamplewiseError


def test_layers_and_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 4\nlr: 1\nmodel_args: {width: 2}\nmilestones: [0.3, 0.6]\n")
    cfg = load_config(path=f, overrides=["lr=0.05", "seed=3"], epochs=7)
    assert cfg.epochs == 7 and cfg.lr == 0.05 and isinstance(cfg.lr, float)
    assert cfg.model_args == {"width": 2} and cfg.milestones == (0.3, 0.6) and cfg.seed == 3
    assert load_config().eps is None  # None: the dataset card's default


@pytest.mark.parametrize("override, fragment", [
    ("epochs=0", "epochs must be > 0"),
    ("epochs=two", "expects int"),
    ("eps=-0.1", "eps must be >= 0"),
    ("alpha=0", "alpha must be > 0"),
    ("colour=red", "unknown config key 'colour'"),
    ("schedule=linear", "unknown schedule"),
    ("lr=.nan", "lr must be"),
    ("swa_start=1.5", "swa_start"),
    ("noequals", "key=value"),
    ("progress=maybe", "expects bool"),
])
def test_bad_values_are_one_clear_error(override, fragment):
    with pytest.raises(SamplewiseError, match=fragment.replace("(", r"\(")):
        load_config(overrides=[override])


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(SamplewiseError, match="not valid YAML"):
        load_config(path=bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(SamplewiseError, match="mapping"):
        load_config(path=lst)
    with pytest.raises(SamplewiseError, match="not found"):
        load_config(path=tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SamplewiseError):
        load_config(path=evil)


def test_parse_override_reads_yaml_scalars():
    assert parse_override("lr=0.1") == ("lr", 0.1)
    assert parse_override("subset=runs/a.npy") == ("subset", "runs/a.npy")
    assert parse_override("milestones=[0.5, 0.75]") == ("milestones", [0.5, 0.75])


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(TrainConfig.__dataclass_fields__) + ["bogus", ""]),
                       _values, max_size=6))
def test_any_mapping_loads_or_raises_our_error(values):
    from samplewise.config import build, validate_train
    try:
        validate_train(build(TrainConfig, values))
    except SamplewiseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_yaml_text_loads_or_raises_our_error(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("y") / "c.yaml"
    f.write_text(text)
    try:
        load_config(path=f)
    except SamplewiseError:
        pass

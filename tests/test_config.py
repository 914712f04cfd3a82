import pytest

from kdlab.config import RunConfig, load_config
from kdlab.engine.schedule import LRSchedule
from kdlab.errors import ConfigError
from kdlab.experiment import build_run
from kdlab.methods.base import resolve_method_params


def test_defaults_are_the_crd_protocol():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.05, 0.9, 5e-4)
    assert (cfg.schedule.epochs, cfg.schedule.milestones, cfg.data.batch_size) == (240, [150, 180, 210], 64)


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=1e-3", "schedule.milestones=[2,4]", "data.flip=false", "teacher.name=wrn_40_2"])
    assert cfg.optim.lr == pytest.approx(0.001) and isinstance(cfg.optim.lr, float)
    assert cfg.schedule.milestones == [2, 4]
    assert cfg.data.flip is False
    assert cfg.teacher is not None and cfg.teacher.name == "wrn_40_2"


def test_yaml_file_and_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.1}\nschedule: {epochs: 3}\n")
    cfg = load_config(path, ["schedule.epochs=5"])
    assert cfg.optim.lr == 0.1 and cfg.schedule.epochs == 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "did you mean: optim.lr"),
        ("shedule.epochs=3", "did you mean: schedule"),
        ("schedule.epochs=abc", "schedule.epochs must be an integer"),
        ("schedule.epochs=2.5", "schedule.epochs must be an integer"),
        ("schedule.epochs=.inf", "schedule.epochs must be an integer"),
        ("data.batch_size=.nan", "data.batch_size must be an integer"),
        ("optim.lr=.inf", "optim.lr must be a finite number"),
        ("views.strength=.nan", "views.strength must be a finite number"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("schedule.kind=cosin", "did you mean: cosine"),
        ("data.flip=maybe", "data.flip must be true or false"),
        ("noequals", "must look like key.sub=value"),
    ],
)
def test_bad_config_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yaml")


def test_method_params_are_validated_with_suggestions():
    name, params = resolve_method_params({"name": "kd", "temperature": 2})
    assert name == "kd" and params.temperature == 2.0 and params.kd_weight == 0.9
    with pytest.raises(ConfigError, match="did you mean: method.temperature"):
        resolve_method_params({"name": "kd", "temprature": 2})
    with pytest.raises(ConfigError, match="unknown method 'kdd'.*did you mean: kd"):
        resolve_method_params({"name": "kdd"})
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        resolve_method_params({"name": "kd", "temperature": 0})


def test_distill_without_teacher_fails_before_training():
    cfg = load_config(None, ["data.dataset=digits", "method.name=kd"])
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_run(cfg)


def test_multistep_schedule_with_epoch_factor():
    cfg = load_config(None, ["schedule.epoch_factor=4"]).schedule
    s = LRSchedule(cfg, 0.05)
    assert s.epochs == 960 and s.milestones == [600, 720, 840]
    assert s(0) == pytest.approx(0.05) and s(599.9) == pytest.approx(0.05)
    assert s(600) == pytest.approx(0.005) and s(720) == pytest.approx(0.0005) and s(959) == pytest.approx(0.00005)


def test_cosine_schedule_with_warmup():
    cfg = load_config(None, ["schedule.kind=cosine", "schedule.epochs=10", "schedule.warmup_epochs=2"]).schedule
    s = LRSchedule(cfg, 0.1)
    assert s(0) < 0.001 and s(1) == pytest.approx(0.05, rel=1e-3)
    assert s(2) == pytest.approx(0.1) and s(6) == pytest.approx(0.05) and s(10) == pytest.approx(0.0)


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(files) > 60
    for f in files:
        load_config(f)

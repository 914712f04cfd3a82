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


def test_a_config_file_extends_its_bases(tmp_path):
    (tmp_path / "protocol.yaml").write_text("optim: {lr: 0.05, momentum: 0.9}\nschedule: {epochs: 240}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pair.yaml").write_text(
        "base: ../protocol.yaml\nstudent: {name: resnet20}\nmethod: {name: kd, temperature: 2.0}\noptim: {lr: 0.01}\n"
    )
    (tmp_path / "sub" / "long.yaml").write_text("base: [pair.yaml]\nschedule: {epoch_factor: 4}\n")
    cfg = load_config(tmp_path / "sub" / "long.yaml")
    assert cfg.optim.lr == 0.01 and cfg.optim.momentum == 0.9  # merged key by key, the file over its base
    assert cfg.schedule.epochs == 240 and cfg.schedule.epoch_factor == 4
    assert cfg.student.name == "resnet20" and cfg.method == {"name": "kd", "temperature": 2.0}
    # a derived file naming another method starts that method from its own defaults
    (tmp_path / "sub" / "dkd.yaml").write_text("base: pair.yaml\nmethod: {name: dkd, beta: 2.0}\n")
    assert load_config(tmp_path / "sub" / "dkd.yaml").method == {"name": "dkd", "beta": 2.0}
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "c.yaml")


def test_switching_the_method_on_the_command_line_drops_the_old_methods_keys():
    from pathlib import Path

    pair = Path(__file__).parents[1] / "configs" / "cifar100" / "kd_resnet56_resnet20.yaml"
    notices: list[str] = []
    cfg = load_config(pair, ["method.kd_weight=0.5"], notice=notices.append)
    assert cfg.method == {"name": "kd", "kd_weight": 0.5} and not notices
    cfg = load_config(pair, ["method.ce_weight=0.7", "method.name=dist"], notice=notices.append)
    assert cfg.method == {"name": "dist", "ce_weight": 0.7}  # overrides on the line still apply
    cfg = load_config(pair, ["method.name=dist"], notice=notices.append)
    assert cfg.method == {"name": "dist"} and notices == []  # the pair file names only the method: nothing dropped
    cfg = load_config(pair, ["method.ce_weight=0.7", "method.name=dkd"], notice=notices.append)
    assert cfg.method == {"name": "dkd", "ce_weight": 0.7, "beta": 2.0}  # + this pair's published β (mdistiller)
    assert len(notices) == 1 and "method_defaults" in notices.pop()
    with_keys = Path(__file__).parents[1] / "configs" / "cifar100" / "ensemble" / "kd_ensemble3_ResNet50_ResNet18.yaml"
    cfg = load_config(with_keys, ["method.name=dist"], notice=notices.append)
    assert cfg.method == {"name": "dist"}
    assert notices and "ce_weight, ensemble, kd_weight, temperature were dropped" in notices[0]


def test_every_method_runs_on_every_cifar100_pair_by_one_override():
    """The methods × pairs recipes of the CRD benchmark: a pair file + method.name=NAME, the method's defaults with
    the pair's published method_defaults (docs/method_defaults.md) over them."""
    from pathlib import Path

    from kdlab.methods import METHODS
    from kdlab.methods.base import resolve_method_params

    pairs = sorted((Path(__file__).parents[1] / "configs" / "cifar100").glob("kd_*.yaml"))
    assert len(pairs) == 12
    for pair in pairs:
        for name in METHODS.names():
            cfg = load_config(pair, [f"method.name={name}"])
            assert cfg.teacher is not None and cfg.schedule.milestones == [150, 180, 210]
            resolved, params = resolve_method_params(cfg.method)
            published = cfg.method_defaults.get(name, {})
            expected = {k: v for k, v in published.items() if "." not in k and k != "source"}
            assert resolved == name and params == METHODS.get(name).cls.Params(**expected)


def test_ranges_are_declared_where_the_parameter_lives():
    with pytest.raises(ConfigError, match=r"method\.temperature must be > 0, got -1"):
        from kdlab.methods.base import resolve_method_params

        resolve_method_params({"name": "dist", "temperature": -1})  # DIST's own default; LogitParams' range
    with pytest.raises(ConfigError, match=r"views\.params\.pool_factor must be >= 1"):
        from kdlab.views import build_view

        build_view("cutmix_pick", {"pool_factor": 0}, 32)
    with pytest.raises(ConfigError, match="schedule.gamma must be <= 1"):
        load_config(None, ["schedule.gamma=2"])

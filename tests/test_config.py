"""Search configuration: presets, YAML round trips, overrides, and the errors a user can make."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from spacec.cli import options as cli_options
from spacec.cli.search import search_config
from spacec.runtime.domains.image.data import ImageData
from spacec.runtime.errors import ConfigError
from spacec.runtime.run.config import RunConfig, SpaceConfig, parse_assignment
from spacec.runtime.run.config import apply_overrides as apply_to
from spacec.runtime.run.schedules import LR_SCHEDULES
from spacec.runtime.search.architect import ARCH_ORDERS, ArchConfig
from spacec.runtime.search.config import (
    SCHEDULES,
    OptimConfig,
    SearchConfig,
    from_dict,
    load_config,
    presets,
    read_config,
    to_dict,
    to_yaml,
    write_config,
)
from spacec.runtime.search.strategy import STRATEGIES

SECTIONS = ("task", "space", "data", "method", "optim", "arch", "run")


def apply_overrides(raw, overrides):
    return apply_to(raw, overrides, SECTIONS)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_presets_ship_quick_and_paper():
    assert {"quick", "paper"} <= set(presets())


def test_paper_preset_is_the_papers_setting():
    cfg = load_config("paper")
    assert cfg.optim == OptimConfig()  # train_search.py: 50 epochs, lr 0.025 -> 0.001, ...
    assert cfg.data.batch_size == 64 and cfg.data.name == "sample"
    assert cfg.space == SpaceConfig()  # darts_cnn at its declared C=16, layers=8
    assert cfg.arch == ArchConfig(order=2)


def test_quick_preset_is_a_small_real_search():
    cfg = load_config("quick")
    assert cfg.space.name == "darts_cnn"
    assert cfg.optim.epochs >= 1 and cfg.arch.mode == "bilevel"
    assert cfg.data.name == "sample"


def test_yaml_round_trip_of_every_field(tmp_path):
    cfg = SearchConfig(
        space=SpaceConfig(name="nas_bench_201", overrides={"C": 4}, optional_overrides={"N": 1}),
        data=ImageData(batch_size=8, limit=40, train_portion=0.625, cutout=4),
        optim=OptimConfig(epochs=3, lr=0.05, grad_clip=None, schedule="constant"),
        arch=ArchConfig(order=2, betas=(0.9, 0.99), unrolled_clip=0.25),
        run=RunConfig(seed=7, out=str(tmp_path), checkpoint_every=3, threads=1),
    )
    assert from_dict(yaml.safe_load(to_yaml(cfg))) == cfg
    path = tmp_path / "config.yaml"
    write_config(cfg, path)
    assert read_config(path) == cfg
    assert to_dict(read_config(path)) == to_dict(cfg)


def test_defaults_round_trip_and_missing_sections_take_defaults():
    assert from_dict(to_dict(SearchConfig())) == SearchConfig()
    assert from_dict({}) == SearchConfig()
    assert from_dict(None) == SearchConfig()


def test_exponent_without_dot_reads_as_a_number(tmp_path):
    # PyYAML reads 3e-4 as a string.
    cfg = load_config(str(write(tmp_path, "optim:\n  weight_decay: 3e-4\n")))
    assert cfg.optim.weight_decay == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim:\n  epoch: 3\n", "optim: unknown key(s) epoch; valid: epochs"),
        ("optimiser:\n  epochs: 3\n", "top level: unknown key(s) optimiser"),
        ("optim:\n  epochs: three\n", "optim.epochs: expected an integer, got 'three'"),
        ("optim:\n  epochs: 2.5\n", "optim.epochs: expected an integer"),
        ("data:\n  download: 1\n", "data.download: expected true or false"),
        ("run:\n  seed: true\n", "run.seed: expected an integer, got True"),
        ("optim:\n  epochs: 0\n", "optim: epochs must be >= 1, got 0"),
        ("optim:\n  lr: .nan\n", "optim.lr: expected a finite number, got nan"),
        ("optim:\n  lr: -1\n", "optim: lr must be > 0"),
        ("optim:\n  schedule: step\n", "optim: unknown schedule 'step'; valid: cosine, constant"),
        ("arch:\n  order: 3\n", "arch: unknown order 3"),
        ("arch:\n  betas: [0.5]\n", "arch.betas: expected a list of 2 values"),
        ("data:\n  name: cifar10\n", "data: dataset 'cifar10' needs a data directory: --data-dir DIR"),
        ("data:\n  batch_size: 0\n", "data: batch_size must lie in [1, 2147483647], got 0"),
        # What torch would refuse with a traceback, mid-run or at the start:
        ("data:\n  batch_size: 100000000000000000000\n", "data: batch_size must lie in"),
        ("run:\n  seed: 100000000000000000000000\n", "run: seed must lie in [0, 2**63 - 1]"),
        ("run:\n  threads: 100000\n", "run: threads must lie in [1, 1024]"),
        ("optim:\n  lr: 1.0e+300\n", "optim: lr must be a finite number below 3.4e+38"),
        ("optim:\n  weight_decay: 1.0e+300\n", "optim: weight_decay must be a finite number"),
        ("arch:\n  lr: -0.1\n", "arch: lr must be a finite number > 0, got -0.1"),
        ("arch:\n  weight_decay: -1\n", "arch: weight_decay must be a finite number >= 0"),
        ("arch:\n  betas: [1.5, 0.999]\n", "arch: betas must be two numbers in [0, 1)"),
        ("run:\n  device: gpu\n", "run: device must be auto, cpu, cuda, cuda:N or mps"),
        ("space:\n  overrides: {C: big}\n", "space.overrides.C: expected a number"),
        ("task: video\n", "task: unknown task 'video'; valid: image"),
        ("optim: 3\n", "optim: expected a mapping"),
        ("- 1\n", "expected a mapping of sections"),
        ("optim: [\n", ":2:1: not valid YAML: expected the node content"),
        # A key given twice was taken as its last value (a second section dropped the first's).
        ("optim:\n  epochs: 1\noptim:\n  lr: 0.05\n",
         ":3:1: not valid YAML: the key 'optim' is given twice (first on line 1)"),
        ("optim:\n  epochs: 1\n  epochs: 3\n", ":3:3: not valid YAML: the key 'epochs' is given"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="no such preset or file; presets: .*quick"):
        load_config("fastest")


def test_overrides_set_dotted_and_nested_keys():
    raw = {"space": {"overrides": {"C": 8}}, "optim": {"epochs": 3}}
    merged = apply_overrides(raw, {"arch.order": 2, "space.overrides.layers": 5, "task": "image"})
    assert merged == {"space": {"overrides": {"C": 8, "layers": 5}}, "optim": {"epochs": 3},
                      "arch": {"order": 2}, "task": "image"}
    assert raw == {"space": {"overrides": {"C": 8}}, "optim": {"epochs": 3}}  # not modified


@pytest.mark.parametrize(("key", "message"), [
    ("optimiser.lr", "expected task or SECTION.KEY"),
    ("optim", "expected task or SECTION.KEY"),
    ("optim..lr", "empty key"),
    ("optim.lr.x", "optim.lr is not a mapping"),
])
def test_bad_override_keys(key, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"optim": {"lr": 0.1}}, {key: 1})


def test_an_override_with_a_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"\(with overrides\): optim: epochs must be >= 1"):
        load_config("quick", {"optim.epochs": 0})


def test_parse_assignment_reads_yaml_values():
    assert parse_assignment("optim.lr=0.05") == ("optim.lr", 0.05)
    assert parse_assignment("run.threads=null") == ("run.threads", None)
    assert parse_assignment("arch.betas=[0.9, 0.99]") == ("arch.betas", [0.9, 0.99])
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_assignment("optim.lr")


def test_cli_options_map_onto_config_fields(tmp_path):
    data_dir = tmp_path / "images"
    options = {"data": "imagefolder", "data_dir": data_dir, "order": "2", "seed": 3,
               "out": Path("runs"), "epochs": None, "batch_size": 16}
    cfg = search_config("nas_bench_201", "paper", ("C=4",), ("optim.lr=0.1",), options)
    assert cfg.data.name == "imagefolder" and cfg.data.data_dir == str(data_dir.resolve())
    assert cfg.arch.order == 2 and cfg.run.seed == 3 and cfg.run.out == "runs"
    assert cfg.data.batch_size == 16 and cfg.optim.epochs == 50
    assert cfg.space.name == "nas_bench_201" and cfg.space.overrides == {"C": 4}
    assert cfg.optim.lr == 0.1


def test_a_space_path_is_recorded_absolute(tmp_path, monkeypatch):
    space = Path(__file__).parents[1] / "spaces" / "nas_bench_201.space"
    (tmp_path / "my.space").write_text(space.read_text())
    monkeypatch.chdir(tmp_path)
    cfg = search_config("my.space", "quick", (), (), {})
    assert cfg.space.name == str(tmp_path / "my.space")


def test_choices_agree_with_the_runtime():
    assert STRATEGIES.names() == cli_options.MODES
    assert tuple(int(order) for order in cli_options.ORDERS) == ARCH_ORDERS
    assert set(SCHEDULES) <= set(LR_SCHEDULES.names())


@pytest.mark.parametrize(
    "arch, message",
    [
        ({"mode": "unrolled"},
             "unknown strategy 'unrolled'; valid: bilevel, coordinate, joint, sample, single"),
        ({"order": 2, "mode": "joint"}, "arch.order 2 is not available with arch.mode 'joint'"),
        ({"order": 2, "mode": "coordinate"}, "arch.order 2 is not available"),
    ],
)
def test_a_strategy_must_exist_and_support_the_order(arch, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"arch": arch})


def test_an_unknown_method_is_rejected():
    with pytest.raises(ConfigError, match="unknown method 'dartz'; known: beta_darts, darts, "):
        from_dict({"method": {"name": "dartz"}})


def test_an_error_of_a_data_loader_worker_keeps_its_own_message():
    """torch raises a worker's error again as the same class with the worker's traceback as its
    message; the user reads the error, once."""
    from torch._utils import ExceptionWrapper

    from spacec.runtime.errors import DataError

    try:
        raise DataError("data/cat/3.png: unreadable image (broken PNG file)")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataError) as caught:
        wrapped.reraise()
    assert str(caught.value) == ("data/cat/3.png: unreadable image (broken PNG file) (in the data "
                                 "loader's worker process 0)")
    assert str(DataError("a plain message")) == "a plain message"


def test_a_configuration_files_relative_data_folders_are_taken_from_the_working_directory(
        tmp_path, monkeypatch):
    """As --data-dir is: the run's config.yaml then names the same folders from wherever it is
    resumed (a relative one read other images when resumed from another folder)."""
    from spacec.runtime.configure import search_config, train_config

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "data:\n  name: imagefolder\n  data_dir: images\n  val_dir: ../val\n")
    for read in (search_config, train_config):
        cfg = read("nas_bench_201", config=str(path))
        assert cfg.data.data_dir == str(tmp_path / "images")
        assert cfg.data.val_dir == str(tmp_path.parent / "val")
        assert cfg.data.test_dir is None


@pytest.mark.parametrize(("args", "message"), [
    (["--cfg", "optim.epochs=3", "--epochs", "1"],
     "--epochs 1 and --cfg optim.epochs=3 set optim.epochs twice, differently"),
    (["--cfg", "arch.order=2", "--order", "1"], "--order 1 and --cfg arch.order=2 set arch.order"),
    (["nas_bench_201", "--cfg", "space.overrides.C=4", "--set", "C=2"],
     "--set C=2 and --cfg space.overrides.C=4 set space.overrides.C twice"),
])
def test_an_option_and_an_override_that_disagree_are_refused(args, message, tmp_path):
    from click.testing import CliRunner

    from spacec.cli import main

    result = CliRunner().invoke(main, ["search", *args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_the_method_line_of_a_search_without_alpha_names_no_alpha_step():
    from spacec.runtime.configure import search_method
    from spacec.runtime.search.config import load_config as load_search_config

    line = search_method(load_search_config("quick", {"method.name": "random_ws"}))
    assert line.startswith("random_ws: sample, no α; ") and "α lr" not in line
    assert "first order" in search_method(load_search_config("quick"))


def test_an_empty_configuration_file_says_it_sets_nothing(tmp_path, caplog):
    from spacec.runtime.configure import search_config

    path = write(tmp_path, "# nothing yet\n")
    with caplog.at_level("WARNING"):
        cfg = search_config(config=str(path))
    assert cfg.optim.epochs == 50  # the reference code's, not the quick preset's
    assert f"{path} sets nothing: every setting is its default" in caplog.text


@pytest.mark.parametrize(("args", "where"), [
    (["--config", "{yaml}"], "{yaml}: error: space.overrides.Cx: no such parameter"),
    (["--cfg", "space.overrides.Cx=3"], "<command line>: error: --cfg space.overrides.Cx: no such"),
    (["--set", "Cx=3"], "<command line>: error: --set Cx: no such parameter"),
])
def test_an_unknown_parameter_names_who_set_it(args, where, tmp_path):
    """A configuration file's `space.overrides` read as '--set' on the command line."""
    from click.testing import CliRunner

    from spacec.cli import main

    yaml_file = write(tmp_path, "space:\n  overrides:\n    Cx: 3\n")
    args = [arg.format(yaml=yaml_file) for arg in args]
    result = CliRunner().invoke(main, ["search", "darts_cnn", *args,
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert where.format(yaml=yaml_file) in result.output
    assert "did you mean 'C'?" in result.output
    assert not (tmp_path / "runs").exists()


def test_an_unknown_parameter_given_to_the_api_names_the_argument(tmp_path):
    import spacec

    for kwargs, who in (({"params": {"Cx": 3}}, "params['Cx']"),
                        ({"overrides": {"space.overrides.Cx": 3}},
                         "overrides['space.overrides.Cx']")):
        with pytest.raises(spacec.SpaceError, match=re.escape(f"{who}: no such parameter")):
            spacec.search("darts_cnn", out=tmp_path / "runs", **kwargs)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["darts_rnn", "--image-size", "16"],
     "--image-size: darts_rnn is a sequence space, whose data takes no data.image_size (it is "
     "for image spaces)"),
    (["darts_rnn", "--val-dir", "."], "--val-dir: darts_rnn is a sequence space"),
    (["darts_cnn", "--data", "ptb"],
     "dataset 'ptb' is for sequence spaces; darts_cnn is an image space (its datasets: cifar10,"),
    (["darts_rnn", "--data", "cifar10"], "dataset 'cifar10' is for image spaces; darts_rnn is a "
     "sequence space (its datasets: ptb, sample, wikitext2)"),
])
def test_an_option_of_another_domain_names_the_spaces_domain(args, message, tmp_path):
    """An image option given to a text space read 'data: unknown key(s) image_size; valid: ...',
    an image space given --data ptb 'unknown dataset'."""
    from click.testing import CliRunner

    from spacec.cli import main

    result = CliRunner().invoke(main, ["search", *args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()

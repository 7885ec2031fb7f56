"""The experiment file: validation lists every error with its path, bad value and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepseek_ray.cli import main
from deepseek_ray.config import ConfigError, ExperimentConfig, load, parse_duration

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.errors


def test_quickstart_is_valid_and_paths_resolve_against_the_file():
    cfg = load(ROOT / "examples" / "quickstart.yaml")
    assert cfg.name == "mnist-quickstart"
    assert cfg.search.space == (ROOT / "search_spaces" / "mnist_cnn.yaml").resolve()
    assert cfg.search.space.is_file()
    assert cfg.tracking.experiment_name == "mnist-quickstart"  # merged from mlflow_config.yaml
    assert cfg.tracking.tracking_uri.startswith("sqlite:////")  # made absolute once, in the driver
    assert cfg.search.budget.time == 300.0


def test_wrong_type_names_path_value_and_rule(tmp_path):
    errors = errors_of(write(tmp_path, "name: x\ndata: {dataset: digits}\ntrain: {epochs: ten}\n"))
    assert errors == ["train.epochs: got 'ten'; Input should be a valid integer, unable to parse string as an integer"]


def test_unknown_choice_lists_allowed_values(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch: {strategy: {type: bayes}}\n"))
    assert error.startswith("search.strategy.type: got 'bayes'")
    for allowed in ("'random'", "'tpe'", "'gp'", "'cmaes'", "'nsga2'"):
        assert allowed in error


def test_unknown_key_is_an_error(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\ntrain: {epochz: 3}\n"))
    assert error.startswith("train.epochz: unknown key")


def test_every_error_is_listed(tmp_path):
    errors = errors_of(write(tmp_path, "name: x\ndata: {split: {train: 0.5}}\ntrain: {workers: 0, precision: fp8}\nfoo: 1\n"))
    paths = sorted(e.split(":")[0] for e in errors)
    assert paths == ["data.split", "foo", "train.precision", "train.workers"]


def test_missing_section(tmp_path):
    assert errors_of(write(tmp_path, "name: x\nsearch: {}\n")) == ["data: required, but missing"]


def test_bad_yaml_names_the_line(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: digits\n"))
    assert error.startswith("not valid YAML: line 3")


def test_empty_file(tmp_path):
    (error,) = errors_of(write(tmp_path, "\n"))
    assert "empty" in error


def test_scheduler_type_picks_its_class(tmp_path):
    errors = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch: {scheduler: {type: asha, brackets: 3}}\n"))
    assert errors == ["search.scheduler.asha.brackets: unknown key (check the spelling; `deepseek-ray schema` lists the allowed keys)"]


def test_overrides_use_dotted_keys(tiny_config_path):
    cfg = load(tiny_config_path, {"train.epochs": 5, "search.budget.trials": 7})
    assert (cfg.train.epochs, cfg.search.budget.trials) == (5, 7)


def test_duration_parsing():
    assert parse_duration("90s") == 90 and parse_duration("1.5h") == 5400 and parse_duration(12) == 12
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_cli_validate_and_schema(tmp_path, capsys):
    bad = write(tmp_path, "name: x\ndata: {}\ntrain: {precision: fp8}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.precision: got 'fp8'" in err and "'bf16'" in err
    assert main(["validate", str(ROOT / "examples" / "quickstart.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) == {"name", "data"}
    assert {"data", "search", "train", "export", "serve", "tracking"} <= set(schema["properties"])
    assert schema == ExperimentConfig.model_json_schema()


# ---------------------------------------------------------------------- kind-specific data keys
@pytest.mark.parametrize("example", ["quickstart", "tabular", "timeseries", "text_fewshot"])
def test_every_example_validates(example, capsys):
    assert main(["validate", str(ROOT / "examples" / f"{example}.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_text_keys_name_the_field_and_the_allowed_values(tmp_path):
    errors = errors_of(write(tmp_path, "name: x\ndata:\n  dataset: rotten_tomatoes\n  text: {max_len: 1, tokenizer: '',"
                                       " augmentation: [shout, {type: random_swap, p: 2}], colour: red}\n"))
    assert errors[0].startswith("data.text.tokenizer: got ''")
    assert errors[1].startswith("data.text.max_len: got 1; Input should be greater than or equal to 2")
    assert errors[2].startswith("data.text.augmentation.0: got {'type': 'shout'}")
    for allowed in ("'synonym_replacement'", "'random_swap'", "'random_deletion'", "'back_translation'"):
        assert allowed in errors[2]
    assert errors[3].startswith("data.text.augmentation.1.random_swap.p: got 2")
    assert errors[4].startswith("data.text.colour: unknown key")


def test_text_short_and_long_augmentation_forms(tmp_path):
    cfg = load(write(tmp_path, "name: x\ndata:\n  dataset: rotten_tomatoes\n  text:\n    tokenizer: bpe\n"
                               "    augmentation: [random_deletion, {type: back_translation, forward: ./en-de}]\n"))
    assert [a.type for a in cfg.data.text.augmentation] == ["random_deletion", "back_translation"]
    assert cfg.data.text.augmentation[1].forward == "./en-de" and cfg.data.text.tokenizer == "bpe"


def test_local_tokenizer_folder_resolves_against_the_file(tmp_path):
    (tmp_path / "my_tokenizer").mkdir()
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: rotten_tomatoes, text: {tokenizer: my_tokenizer}}\n"))
    assert cfg.data.text.tokenizer == str(tmp_path / "my_tokenizer")
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: rotten_tomatoes, text: {tokenizer: bert-base-uncased}}\n"))
    assert cfg.data.text.tokenizer == "bert-base-uncased"  # not a path: a hub name, left as it is


def test_window_and_tabular_keys(tmp_path):
    errors = errors_of(write(tmp_path, "name: x\ndata: {dataset: co2, window: {lookback: 0, horizon: soon}}\n"))
    assert errors[0].startswith("data.window.lookback: got 0") and errors[1].startswith("data.window.horizon: got 'soon'")
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {year: {median: 3}}}}\n"))
    assert error.startswith("data.tabular.bins:") and "{quantile: n} or {uniform: n}" in error
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {age: [30, 18]}}}\n"))
    assert "bins.age: edges must be at least two strictly increasing numbers" in error
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {age: [0, 18, 30, 120]}, scale: false}}\n"))
    assert cfg.data.tabular.bins == {"age": [0, 18, 30, 120]} and cfg.data.tabular.scale is False


def test_options_of_two_kinds_are_an_error(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: co2, window: {lookback: 4}, tabular: {scale: true}}\n"))
    assert "window and tabular are options of different dataset kinds" in error


def test_options_that_do_not_fit_the_registered_dataset(tmp_path):
    from deepseek_ray.pipeline import data_options

    cfg = load(write(tmp_path, "name: x\ndata: {dataset: penguins, window: {lookback: 4}}\n"))
    with pytest.raises(ValueError, match="data.window: penguins is a tabular dataset"):
        data_options(cfg)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: co2, window: {lookback: 4}}\n"))
    assert data_options(cfg) == {"lookback": 4, "horizon": 1}


def test_search_metric_must_fit_the_task(tmp_path):
    from deepseek_ray.data import load_dataset
    from deepseek_ray.pipeline import objective

    sunspots = load_dataset("sunspots", lookback=4)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_accuracy}\n"))
    with pytest.raises(ValueError, match=r"search.metric: val_accuracy is not reported .* allowed: val_mae \(mode min\)"):
        objective(cfg, sunspots)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_mae, mode: max}\n"))
    with pytest.raises(ValueError, match="search.mode: val_mae is better when lower"):
        objective(cfg, sunspots)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_mae, mode: min}\n"))
    assert objective(cfg, sunspots) == ("val_mae", "min")


def test_serving_a_variant_the_file_does_not_export_names_the_field():
    with pytest.raises(Exception, match="serve.model: 'int4' is not exported by this file; allowed: onnx, int8_dynamic"):
        ExperimentConfig(name="x", data={"dataset": "digits"}, export={"quantize": [{"type": "int8_dynamic"}]},
                         serve={"model": "int4"})
    cfg = ExperimentConfig(name="x", data={"dataset": "digits"}, export={"quantize": [{"type": "int4"}]}, serve={"model": "int4"})
    assert cfg.serve.model == "int4"

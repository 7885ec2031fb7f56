"""The experiment file: validation lists every error with its path, bad value and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from deepseek_ray.cli import main
from deepseek_ray.config import ConfigError, ExperimentConfig, load, load_yaml, parse_duration

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
    errors = errors_of(
        write(tmp_path, "name: x\ndata: {split: {train: 0.5}}\ntrain: {workers: 0, precision: fp8}\nfoo: 1\n")
    )
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
    assert errors == [
        "search.scheduler.asha.brackets: unknown key (check the spelling; `deepseek-ray schema` lists the allowed keys)"
    ]


def test_overrides_use_dotted_keys(tiny_config_path):
    cfg = load(tiny_config_path, {"train.epochs": 5, "search.budget.trials": 7})
    assert (cfg.train.epochs, cfg.search.budget.trials) == (5, 7)


def test_duration_parsing():
    assert parse_duration("90s") == 90 and parse_duration("1.5h") == 5400 and parse_duration(12) == 12
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_cli_validate_and_schema(tmp_path, capsys):
    bad = write(tmp_path, "name: x\ndata: {}\ntrain: {precision: fp8}\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "train.precision: got 'fp8'" in err and "'bf16'" in err
    assert main(["validate", str(ROOT / "examples" / "quickstart.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) == {"name", "data"}
    assert {"data", "search", "train", "export", "serve", "tracking"} <= set(schema["properties"])
    # The published schema accepts what the validator accepts (every shipped example, short forms included)
    # and refuses what it refuses.
    validator = jsonschema.Draft202012Validator(schema)
    for example in sorted(set((ROOT / "examples").glob("*.yaml")) - {ROOT / "examples" / "mlflow_config.yaml"}):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(load_yaml(example))]
        assert not errors, (example.name, errors[:3])
    for bad in ({"train": {"precision": "fp8"}}, {"search": {"budget": {"time": "soon"}}},
                {"data": {"text": {"augmentation": ["shout"]}}}, {"export": {"formats": ["pickle"]}}):
        assert not validator.is_valid({"name": "x", "data": {}, **bad}), bad


# ---------------------------------------------------------------------- kind-specific data keys
@pytest.mark.parametrize("example", ["quickstart", "tabular", "timeseries", "text_fewshot", "shadow"])
def test_every_example_validates(example, capsys):
    assert main(["validate", str(ROOT / "examples" / f"{example}.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_text_keys_name_the_field_and_the_allowed_values(tmp_path):
    errors = errors_of(
        write(
            tmp_path,
            "name: x\ndata:\n  dataset: rotten_tomatoes\n  text: {max_len: 1, tokenizer: '',"
            " augmentation: [shout, {type: random_swap, p: 2}], colour: red}\n",
        )
    )
    assert errors[0].startswith("data.text.tokenizer: got ''")
    assert errors[1].startswith("data.text.max_len: got 1; Input should be greater than or equal to 2")
    assert errors[2].startswith("data.text.augmentation.0: got {'type': 'shout'}")
    for allowed in ("'synonym_replacement'", "'random_swap'", "'random_deletion'", "'back_translation'"):
        assert allowed in errors[2]
    assert errors[3].startswith("data.text.augmentation.1.random_swap.p: got 2")
    assert errors[4].startswith("data.text.colour: unknown key")


def test_text_short_and_long_augmentation_forms(tmp_path):
    cfg = load(
        write(
            tmp_path,
            "name: x\ndata:\n  dataset: rotten_tomatoes\n  text:\n    tokenizer: bpe\n"
            "    augmentation: [random_deletion, {type: back_translation, forward: ./en-de}]\n",
        )
    )
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
    assert errors[0].startswith("data.window.lookback: got 0") and errors[1].startswith(
        "data.window.horizon: got 'soon'"
    )
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {year: {median: 3}}}}\n"))
    assert error.startswith("data.tabular.bins:") and "{quantile: n} or {uniform: n}" in error
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {age: [30, 18]}}}\n"))
    assert "bins.age: edges must be at least two strictly increasing numbers" in error
    cfg = load(
        write(tmp_path, "name: x\ndata: {dataset: penguins, tabular: {bins: {age: [0, 18, 30, 120]}, scale: false}}\n")
    )
    assert cfg.data.tabular.bins == {"age": [0, 18, 30, 120]} and cfg.data.tabular.scale is False


def test_options_of_two_kinds_are_an_error(tmp_path):
    (error,) = errors_of(
        write(tmp_path, "name: x\ndata: {dataset: co2, window: {lookback: 4}, tabular: {scale: true}}\n")
    )
    assert "window and tabular are options of different dataset kinds" in error


def test_options_that_do_not_fit_the_registered_dataset(tmp_path):
    from deepseek_ray.data import kind_options

    cfg = load(write(tmp_path, "name: x\ndata: {dataset: penguins, window: {lookback: 4}}\n"))
    with pytest.raises(ValueError, match="data.window: penguins is a tabular dataset"):
        kind_options(cfg.data)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: co2, window: {lookback: 4}}\n"))
    assert kind_options(cfg.data) == {"lookback": 4, "horizon": 1}


def test_search_metric_must_fit_the_task(tmp_path):
    from deepseek_ray.data import load_dataset
    from deepseek_ray.stages import objective

    sunspots = load_dataset("sunspots", lookback=4)
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_accuracy}\n"))
    with pytest.raises(
        ValueError, match=r"search.metric: val_accuracy is not reported .* allowed: .*val_mae \(mode min\)"
    ):
        objective(cfg, sunspots)
    # a mode against the metric's direction is refused with the file, whatever the task
    assert errors_of(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_mae, mode: max}\n")) == [
        "search.mode: val_mae is better when lower: use mode min, got max"
    ]
    cfg = load(write(tmp_path, "name: x\ndata: {dataset: sunspots}\nsearch: {metric: val_mae, mode: min}\n"))
    assert objective(cfg, sunspots) == ("val_mae", "min")


def test_serving_a_variant_the_file_does_not_export_names_the_field():
    with pytest.raises(
        Exception, match="serve.model: 'int4' is not exported by this file; allowed: onnx, int8_dynamic"
    ):
        ExperimentConfig(
            name="x",
            data={"dataset": "digits"},
            export={"quantize": [{"type": "int8_dynamic"}]},
            serve={"model": "int4"},
        )
    cfg = ExperimentConfig(
        name="x", data={"dataset": "digits"}, export={"quantize": [{"type": "int4"}]}, serve={"model": "int4"}
    )
    assert cfg.serve.model == "int4"
    with pytest.raises(Exception, match=r"serve.model: 'torch_export' is not exported by this file; allowed: onnx \("):
        ExperimentConfig(name="x", data={"dataset": "digits"}, serve={"model": "torch_export"})
    program = {"name": "x", "data": {"dataset": "digits"}, "export": {"formats": ["onnx", "torch_export"]}}
    assert ExperimentConfig(**program, serve={"model": "torch_export", "precision": "bf16"}).serve.precision == "bf16"
    with pytest.raises(Exception, match="serve.precision fp16 needs serve.model: torch_export"):
        ExperimentConfig(**program, serve={"precision": "fp16"})
    with pytest.raises(Exception, match=r"serve.precision\n  Input should be 'fp32', 'fp16' or 'bf16'"):
        ExperimentConfig(**program, serve={"model": "torch_export", "precision": "int3"})


# ---------------------------------------------------------------------- one list per choice, read from registries
def test_registries_hold_what_the_implementations_register():
    from deepseek_ray.config import (
        BIN_STRATEGIES,
        CALIBRATION_METHODS,
        COMPILE_MODES,
        EXPORT_FORMATS,
        LR_SCHEDULES,
        METRICS,
        OPTIMIZERS,
        QUANTIZE_METHODS,
        QUANTIZE_RECIPES,
        STRATEGIES,
        TEXT_AUGMENTATIONS,
        TRAINED_TOKENIZERS,
    )
    from deepseek_ray.data import AUGMENTATIONS, text
    from deepseek_ray.export import FORMATS
    from deepseek_ray.hpo.strategies import make_sampler
    from deepseek_ray.optim import trainer
    from deepseek_ray.quantization import METHODS, RECIPES

    assert STRATEGIES.names() == ["random", "grid", "tpe", "gp", "cmaes", "hyperopt", "evolution", "nsga2"]
    assert type(make_sampler("cmaes", seed=0)).__name__ == "CmaEsSampler"
    assert set(METRICS.names()) >= {"val_accuracy", "val_mae", "val_loss", "latency_ms"}
    assert (
        AUGMENTATIONS
        == TEXT_AUGMENTATIONS
        == ("synonym_replacement", "random_swap", "random_deletion", "back_translation")
    )
    assert TRAINED_TOKENIZERS.names() == ["wordpiece", "bpe"] and text.train_tokenizer(["a b"], "bpe", 100) is not None
    assert BIN_STRATEGIES.names() == ["quantile", "uniform"]
    assert OPTIMIZERS.names() == list(trainer._OPTIMIZERS) and LR_SCHEDULES.names() == list(trainer.SCHEDULES)
    assert COMPILE_MODES.names() == list(trainer.COMPILE_MODES)
    assert EXPORT_FORMATS.names() == list(FORMATS)
    assert METHODS == QUANTIZE_METHODS == ("int8_dynamic", "int8_static", "int4")
    assert (
        CALIBRATION_METHODS.names() == ["minmax", "entropy", "percentile"] and list(RECIPES) == QUANTIZE_RECIPES.names()
    )


def test_json_schema_enums_come_from_the_registries():
    from deepseek_ray.config import COMPILE_MODES, EXPORT_FORMATS, KINDS, OPTIMIZERS, STRATEGIES

    defs = ExperimentConfig.model_json_schema()["$defs"]
    assert defs["StrategyConfig"]["properties"]["type"]["enum"] == STRATEGIES.names()
    assert defs["OptimizerConfig"]["properties"]["type"]["enum"] == OPTIMIZERS.names()
    assert defs["ExportConfig"]["properties"]["formats"]["items"]["enum"] == EXPORT_FORMATS.names()
    assert defs["TrainConfig"]["properties"]["compile"]["anyOf"][1]["enum"] == COMPILE_MODES.names()
    assert defs["DataConfig"]["properties"]["kind"]["anyOf"][0]["enum"] == KINDS.names()
    served = defs["ServeConfig"]["properties"]["model"]["anyOf"]
    assert served[0]["enum"] == ["onnx", "torch_export", "int8_dynamic", "int8_static", "int4"]
    assert served[1]["pattern"] == "^models:/.+"  # or a registered version


def test_a_plugin_registered_value_is_allowed():
    from deepseek_ray.config import OPTIMIZERS

    with pytest.raises(Exception, match="train.optimizer.type: got 'lion'; Input should be 'adamw', 'adam' or 'sgd'"):
        validate_mapping({"name": "x", "data": {}, "train": {"optimizer": {"type": "lion"}}})
    OPTIMIZERS.register("lion")(object)
    try:
        assert (
            validate_mapping({"name": "x", "data": {}, "train": {"optimizer": {"type": "lion"}}}).train.optimizer.type
            == "lion"
        )
    finally:
        OPTIMIZERS._items.pop("lion")


@pytest.mark.parametrize(
    "sections, expected",
    [
        (
            "data: {}\ntrain: {compile: fast}",
            "train.compile: got 'fast'; Input should be true, false or 'default', 'reduce-overhead'",
        ),
        ("data: {dataset: penguins, tabular: {bins: {year: {median: 3}}}}", "{quantile: n} or {uniform: n}"),
        (
            "data: {}\nexport: {quantize: [{type: int8_static, recipe: most}]}",
            "export.quantize.0.int8_static.recipe: got 'most'; "
            "Input should be 'auto', 'compute', 'full' or 'transformer'",
        ),
        (
            "data: {}\nexport: {formats: [onnx, coreml]}",
            "export.formats.1: got 'coreml'; Input should be 'onnx', 'torch_export' or 'tensorrt'",
        ),
        (
            "data: {dataset: x.csv, kind: audio}",
            # the built-in kinds first; a plugin kind a test registered may follow them
            "data.kind: got 'audio'; Input should be 'image', 'tabular', 'text'",
        ),
    ],
)
def test_registry_choices_name_the_field_and_the_allowed_values(tmp_path, sections, expected):
    (error,) = errors_of(write(tmp_path, f"name: x\n{sections}\n"))
    assert expected in error


def validate_mapping(raw):
    from deepseek_ray.config import validate_mapping as validate

    return validate(raw)


# ---------------------------------------------------------------------- semantic checks (the fuzz's findings)
def test_search_metric_must_be_reported(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch: {metric: val_acuracy}\n"))
    assert error.startswith("search.metric: got 'val_acuracy'; not a metric the trials report; allowed: ")
    allowed = error.split("allowed: ")[1].split(", ")
    assert {"val_accuracy", "val_loss", "val_mae", "latency_ms"} <= set(allowed)
    (error,) = errors_of(
        write(
            tmp_path,
            "name: x\ndata: {}\nsearch: {metric: [val_accuracy, latncy_ms], mode: [max, min], "
            "scheduler: {type: fifo}}\n",
        )
    )
    assert "got 'latncy_ms'" in error and "latency_ms" in error
    for empty in ("''", "[]", "null", "[val_accuracy, '']"):
        (error,) = errors_of(write(tmp_path, f"name: x\ndata: {{}}\nsearch: {{metric: {empty}}}\n"))
        assert error.startswith("search.metric: got") and "name the metric to optimise" in error
    cfg = load(
        write(
            tmp_path,
            "name: x\ndata: {}\nsearch: {metric: [val_accuracy, latency_ms], mode: [max, min], "
            "scheduler: {type: fifo}}\n",
        )
    )
    assert cfg.search.objectives() == (["val_accuracy", "latency_ms"], ["max", "min"])


def test_a_search_alone_may_optimise_any_metric():
    from deepseek_ray.config import SearchConfig

    # run_trials over a user's function reports what that function yields: only an experiment's trials are fixed
    assert SearchConfig(metric="loss", mode="min").metric == "loss"


def test_hyperband_has_no_grace_period(tmp_path):  # Tune's HyperBandScheduler derives every bracket's rungs
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch: {scheduler: {type: hyperband, grace_period: 2}}\n"))
    assert error.startswith("search.scheduler.hyperband.grace_period: ")


@pytest.mark.parametrize("scheduler", ["asha"])
def test_grace_period_within_max_t(tmp_path, scheduler):
    (error,) = errors_of(
        write(
            tmp_path, f"name: x\ndata: {{}}\nsearch: {{scheduler: {{type: {scheduler}, grace_period: 5, max_t: 4}}}}\n"
        )
    )
    assert error.startswith(f"search.scheduler.{scheduler}: got") and error.endswith(
        "grace_period (5) must not exceed max_t (4)"
    )
    assert load(
        write(
            tmp_path, f"name: x\ndata: {{}}\nsearch: {{scheduler: {{type: {scheduler}, grace_period: 4, max_t: 4}}}}\n"
        )
    )


@pytest.mark.parametrize(
    "key, bound",
    [
        (
            "train: {per_device_train_batch_size: 1000000000000}",
            "train.per_device_train_batch_size: got 1000000000000; Input should be less than or equal to 65536",
        ),
        (
            "train: {gradient_accumulation: 1000000000000}",
            "train.gradient_accumulation: got 1000000000000; Input should be less than or equal to 4096",
        ),
        (
            "search: {scheduler: {type: asha, grace_period: 1000000000000, max_t: 4}}",
            "search.scheduler.asha.grace_period: got 1000000000000; Input should be less than or equal to 100000",
        ),
        (
            "serve: {autoscaling: {max_replicas: 1000000000000}}",
            "serve.autoscaling.max_replicas: got 1000000000000; Input should be less than or equal to 1024",
        ),
        (
            "search: {budget: {trials: 1000000000000}}",
            "search.budget.trials: got 1000000000000; Input should be less than or equal to 100000",
        ),
        (
            "search: {batch_size: 1000000000000}",
            "search.batch_size: got 1000000000000; Input should be less than or equal to 65536",
        ),
        (
            "train: {workers: 1000000000000}",
            "train.workers: got 1000000000000; Input should be less than or equal to 4096",
        ),
        ("seed: 1000000000000", "seed: got 1000000000000; Input should be less than or equal to 4294967295"),
        (
            "serve: {autoscaling: {min_replicas: 3, max_replicas: 2}}",
            "min_replicas (3) must not exceed max_replicas (2)",
        ),
    ],
)
def test_counts_and_sizes_have_bounds(tmp_path, key, bound):
    (error,) = errors_of(write(tmp_path, f"name: x\ndata: {{}}\n{key}\n"))
    assert bound in error


@pytest.mark.parametrize(
    "key",
    [
        "search: {budget: {trials: true}}",
        "train: {epochs: false}",
        "train: {workers: true}",
        "search: {cpus_per_trial: true}",
        "search: {budget: {time: true}}",
        "seed: true",
    ],
)
def test_a_boolean_is_not_a_number(tmp_path, key):
    (error,) = errors_of(write(tmp_path, f"name: x\ndata: {{}}\n{key}\n"))
    assert "expected a number, got " in error and ("got True" in error or "got False" in error)


def test_duplicate_yaml_keys_name_their_lines(tmp_path):
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch:\n  concurrency: 2\n  concurrency: 4\n"))
    assert error == "not valid YAML: line 5, column 3: duplicate key 'concurrency' (first given on line 4)"
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nname: y\n"))
    assert "line 3" in error and "duplicate key 'name' (first given on line 1)" in error
    # a key that a YAML merge (<<) brings in may be overridden: it is not written twice
    from deepseek_ray.config import load_yaml

    raw = load_yaml(write(tmp_path, "defaults: &d {epochs: 2, workers: 1}\ntrain: {<<: *d, epochs: 3}\n"))
    assert raw["train"] == {"epochs": 3, "workers": 1}


@pytest.mark.parametrize("budget", ["{}", "null", ""])
def test_an_empty_budget_is_refused(tmp_path, budget):
    (error,) = errors_of(write(tmp_path, f"name: x\ndata: {{}}\nsearch:\n  budget: {budget}\n"))
    assert error.startswith("search.budget: got") and "the budget is empty" in error
    (error,) = errors_of(write(tmp_path, "name: x\ndata: {}\nsearch: {budget: {time: 0s}}\n"))
    assert error.startswith("search.budget.time: got '0s'") or error.startswith("search.budget.time: got 0")


@pytest.mark.parametrize(
    "key",
    [
        "data: {dataset: %s}",
        "data: {dataset: rotten_tomatoes, text: {tokenizer: %s}}",
        "search: {space: %s}",
        "output_dir: %s",
        "data: {dataset: data/%s.csv}",
    ],
)
def test_over_long_names_and_paths_are_a_clear_error(tmp_path, key):
    text = ("data: {}\n" if not key.startswith("data") else "") + key % ("a" * 5000)
    (error,) = errors_of(write(tmp_path, f"name: x\n{text}\n"))
    assert (
        "a path is at most 4096 characters; this one has" in error
        or "a file or folder name is at most 255 bytes" in error
    )
    assert len(error) < 300  # the 5,000-character value is shortened
    (error,) = errors_of(write(tmp_path, "name: %s\ndata: {}\n" % ("n" * 500)))
    assert error.startswith("name: got 'nnnn") and "at most 100 characters" in error


def test_over_long_file_name_on_the_command_line(capsys):
    assert main(["validate", "x" * 5000 + ".yaml"]) == 1
    assert "file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\ndata: {dataset: %s}\n" % ("a" * 5000), "data.dataset: got 'aaaa"),
        ("name: x\ndata: {}\nsearch: {metric: val_acuracy}\n", "search.metric: got 'val_acuracy'"),
        ("name: x\ndata: {}\nsearch: {budget: {trials: true}}\n", "search.budget.trials: got True; expected a number"),
        ("name: x\ndata: {}\ndata: {}\n", "duplicate key 'data'"),
    ],
)
def test_cli_validate_refuses_with_one_clear_line(tmp_path, capsys, text, expected):
    assert main(["validate", str(write(tmp_path, text))]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err) < 600


def test_shadow_settings_name_the_field_and_the_allowed_values():
    from deepseek_ray.config import ConfigError, load

    base = ROOT / "examples" / "shadow.yaml"
    with pytest.raises(ConfigError, match=r"serve\.shadow\.metric.*accuracy.*rmse"):
        load(base, {"serve.shadow.metric": "f2"})
    with pytest.raises(ConfigError, match=r"serve\.shadow\.fraction"):
        load(base, {"serve.shadow.fraction": 1.5})
    with pytest.raises(ConfigError, match=r"serve\.model.*models:/NAME@ALIAS"):
        load(base, {"serve.model": "int9"})
    assert load(base, {"serve.model": "models:/mnist-shadowed@champion"}).serve.model.endswith("@champion")

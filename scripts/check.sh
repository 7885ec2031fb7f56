#!/bin/sh
# The package's checks, then the tests: lint (ruff), formatting (ruff format), types (mypy), pytest.
# Settings for all three live in pyproject.toml; extra arguments go to pytest.
set -eu

python -m ruff check deepseek_ray
python -m ruff format --check deepseek_ray
python -m mypy deepseek_ray
python -m pytest "$@"

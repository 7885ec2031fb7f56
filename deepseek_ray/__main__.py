"""``python -m deepseek_ray`` is the ``deepseek-ray`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m sml`` is the ``sml`` command (so ``torchrun -m sml ...`` works)."""
from sml.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())

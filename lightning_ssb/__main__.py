"""``python -m lightning_ssb ...`` dispatches to the Lightning CLI."""

from lightning_ssb.cli import main

if __name__ == "__main__":
    main()

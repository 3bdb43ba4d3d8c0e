"""``python -m b12screen``."""

from .cli import main

main()

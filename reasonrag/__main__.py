"""`python -m reasonrag` is the `reasonrag` command."""

from .cli import main

raise SystemExit(main())

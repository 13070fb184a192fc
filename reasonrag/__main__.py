"""`python -m reasonrag` is the `reasonrag` command."""

from reasonrag.cli.main import main

raise SystemExit(main())

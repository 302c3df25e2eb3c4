"""`python -m skygate`."""

from skygate.cli import main

raise SystemExit(main())

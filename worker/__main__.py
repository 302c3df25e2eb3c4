"""`python -m worker` (see the package docstring)."""

from worker.process import main

raise SystemExit(main())

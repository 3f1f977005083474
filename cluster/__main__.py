"""``python -m cluster``: the same command line as the ``zonesim`` script."""

from cluster.cli import main

raise SystemExit(main())

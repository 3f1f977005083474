"""``python -m cluster``: the same command line as the ``zonesim`` script."""

from cluster.cli import main

if __name__ == "__main__":  # (not when a spawned helper process imports this module as __mp_main__)
    raise SystemExit(main())

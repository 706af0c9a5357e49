"""``python -m hannoy``: the ``hannoy`` command (see :mod:`hannoy.cli`)."""

from hannoy.cli import console_main

if __name__ == "__main__":
    console_main()

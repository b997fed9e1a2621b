"""``python -m sealtrail`` is the ``sealtrail`` command."""

import sys

#: The exit status of a command interrupted by Ctrl-C (SIGINT), as a shell reports it.
INTERRUPTED = 130


def main() -> None:
    """The ``sealtrail`` command, quiet on Ctrl-C from its first moment.

    The command line's modules take a second or more to import; Ctrl-C meanwhile would
    print a traceback of whichever import it stopped. Caught here, where nothing heavy has
    been imported yet: no traceback, status 130 (once the command runs, its own handling of
    Ctrl-C applies, the same status)."""
    try:
        from sealtrail.cli import main as run  # noqa: PLC0415 - see the docstring

        run()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)


# Guarded: worker processes started with ``spawn`` import this module again.
if __name__ == "__main__":
    main()

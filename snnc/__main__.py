"""``snnc`` / ``python -m snnc``: install the signal handlers, then import the CLI.

Kept tiny on purpose: SIGINT or SIGTERM during the first second (while torch and friends
are imported) ends the command with one line and exit status 130 / 143, not a traceback.
"""

from __future__ import annotations

import sys

from snnc.utils import interrupts


def main() -> None:
    interrupts.install()
    try:
        from snnc.cli import main as cli

        cli(prog_name="snnc")
    except KeyboardInterrupt as e:  # outside a command (imports, argument parsing)
        interrupts.stop_handling()
        try:
            sys.stderr.write(interrupts.message(e) + "\n")
            sys.stderr.flush()
        except OSError:
            pass
        sys.exit(interrupts.exit_code(e))


if __name__ == "__main__":  # pragma: no cover
    main()

import sys

from supervisor import stop_signals


def main() -> int:
    stop_signals.hold()  # before the imports and the start-up work below
    from supervisor.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())

"""``python -m lmcourse bench NAME [ARGS]`` (or ``python -m lmcourse.bench``): run one benchmark
(no NAME: list them)."""

from __future__ import annotations

import sys

from . import available, run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m lmcourse bench NAME [ARGS]   (NAME --help for its options)")
        print("benchmarks: " + ", ".join(available()))
        return 0 if args else 2
    if args[0] not in available():
        print(f"error: unknown benchmark {args[0]!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    return run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mlplane.serving --name NAME --model-uri URI --http-port P --grpc-port Q [...]``."""

from __future__ import annotations

import sys

from .settings import parse_args


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    # kserve parses sys.argv when it is imported: hand it nothing of ours.
    sys.argv = sys.argv[:1]
    from .server import serve  # imports kserve: only after the reset

    serve(settings)


if __name__ == "__main__":
    main()

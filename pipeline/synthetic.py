"""``python -m pipeline.synthetic``: demo data (lives in ``pipeline.data.synthetic``)."""

from .data.synthetic import main

if __name__ == "__main__":
    main()

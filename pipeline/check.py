"""``python -m pipeline.check``: the dataset check (lives in ``pipeline.data.check``)."""

from .data.check import main

if __name__ == "__main__":
    main()

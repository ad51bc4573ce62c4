"""``python -m pipeline.export``: a trained run as one model package (lives in ``pipeline.predict.export``)."""

from .predict.export import main

if __name__ == "__main__":
    main()

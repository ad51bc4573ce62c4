"""Data stage: files -> arrays with geometry (``io``, ``writers``), dataset layouts and cases
(``layouts``, ``cases``), splits, the dataset check, MONAI transforms, and demo data (``synthetic``)."""

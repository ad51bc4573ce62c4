"""MONAI-based training and evaluation of 3D segmentation networks."""

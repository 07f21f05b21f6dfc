"""rig: controller for a robotic photo-capture rig that builds CheXphoto-style data sets."""

__version__ = "0.1.0"

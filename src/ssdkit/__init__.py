"""ssdkit: SSD object detection toolkit."""
__version__ = "0.1.0"

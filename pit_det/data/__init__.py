from .synthetic import SHAPES, make_synthetic_coco

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # what the tools read and draw

__all__ = ['IMAGE_SUFFIXES', 'SHAPES', 'make_synthetic_coco']

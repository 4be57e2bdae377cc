from .synthetic import SHAPES, make_synthetic_coco

__all__ = ['SHAPES', 'make_synthetic_coco']

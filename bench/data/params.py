"""The light data-set modules (:mod:`bench.registry`, "light declarations"): each registers its
data set with its params, resolutions and split sizes (read from file headers, no image loaded) and
imports torch only where it loads images. tests/test_light_validate.py checks that this list
registers every data set.
"""
from bench.data import fmnist, fmnist_quantized, folders, text_tasks  # noqa: F401

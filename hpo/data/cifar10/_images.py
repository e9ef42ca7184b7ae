"""Image decoding: the import's PNG/JPEG decoder, and a user's own image for `hpo predict`."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpo.data.cifar10._cache import IMAGE_SHAPE

if TYPE_CHECKING:
    import torch

USER_IMAGES = "PNG or JPEG image files of any size (resized to 32x32, converted to RGB)"
MAX_IMAGE_BYTES = 64 * 2**20  # a photo is a few megabytes; anything this big is the wrong file


def read_image(path: Path) -> torch.Tensor:
    """A user's own image as CIFAR-10's images are: 3 x 32 x 32 uint8 RGB (grey and alpha converted).

    The shorter side is resized to 32 (antialiased) and the centre cropped to a square, as torchvision's
    evaluation transforms do, so a photo keeps its proportions. For `hpo predict`; a file that is not a
    readable image is a FieldError naming it and the accepted files.
    """
    import torch
    from torchvision.transforms.v2 import functional as TF

    from hpo.objectives import FieldError, read_input_file

    size = IMAGE_SHAPE[1]
    data = read_input_file(path, accepted=USER_IMAGES, max_bytes=MAX_IMAGE_BYTES)
    try:
        image = torch.as_tensor(_image_decoder()(data))
    except Exception:
        raise FieldError(str(path), f"not an image hpo can decode; accepted: {USER_IMAGES}") from None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = TF.to_dtype(image, torch.uint8, scale=True)
    image = TF.resize(image, [size], antialias=True)
    return TF.center_crop(image, [size, size]).contiguous()


def _image_decoder() -> Callable[[bytes], np.ndarray]:
    """PNG/JPEG bytes -> 3 x H x W uint8. torchvision's libjpeg-turbo/libpng decoder is about 3x faster
    than Pillow; 0.29 marks it deprecated in favour of TorchCodec, so Pillow takes over once it is gone."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        from PIL import Image

        def decode_with_pillow(data: bytes) -> np.ndarray:
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB")).transpose(2, 0, 1)

        return decode_with_pillow

    def decode(data: bytes) -> np.ndarray:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).numpy()

    return decode

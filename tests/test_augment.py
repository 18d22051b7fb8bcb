"""On-device augmentation: shapes, ranges, real crops and flips, determinism."""

import torch

from clbench.augment import random_crop_flip, resize


def test_crop_flip_keeps_shape_dtype_and_pixels():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every output pixel is either padding (0) or a pixel of its own image
    for i in range(len(x)):
        assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0}
    assert (out == 0).any()  # some crops reach into the padding


def test_without_padding_it_is_exactly_flip_or_identity():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3).repeat(50, 1, 1, 1)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all() and flipped.any() and same.any()


def test_crop_is_a_shifted_window():
    x = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6).repeat(200, 1, 1, 1) + 1
    out = random_crop_flip(x, padding=1, generator=torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))
    windows = {padded[:, r:r + 6, c:c + 6].flip(2 * f or -1).numpy().tobytes() if f else padded[:, r:r + 6, c:c + 6].numpy().tobytes()
               for r in range(3) for c in range(3) for f in (0, 1)}
    windows |= {padded[:, r:r + 6, c:c + 6].flip(2).numpy().tobytes() for r in range(3) for c in range(3)}
    assert all(o.numpy().tobytes() in windows for o in out)


def test_same_generator_seed_same_augmentation():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    a = random_crop_flip(x, 2, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_resize():
    x = torch.rand(2, 3, 8, 8)
    assert resize(x, 16).shape == (2, 3, 16, 16)
    assert resize(x, 0) is x and resize(x, 8) is x
    flat = torch.full((1, 1, 4, 4), 0.25)
    assert torch.allclose(resize(flat, 9), torch.full((1, 1, 9, 9), 0.25))

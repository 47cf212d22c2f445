#!/usr/bin/env bash
# The README's "Your own data" and "Your own space" walkthroughs, command for command: a test
# runs this file as it is (tests/test_walkthrough.py), so what the README shows works. Run it
# in an empty folder: it writes data/, my_cells.space, runs/ and my_cells.pt there.
set -euo pipefail

# --- Your own data -------------------------------------------------------------------------

# 1. Images in the ImageFolder layout: data/train/CLASS/*.png, with val/ and test/ beside it.
#    This makes a tiny one (3 classes of 64x64 images); put your own images there instead.
python - <<'EOF'
import numpy as np
from pathlib import Path
from PIL import Image

rng = np.random.default_rng(0)
colours = {"cat": (200, 80, 60), "dog": (70, 180, 70), "owl": (60, 80, 200)}
for split, count in {"train": 8, "val": 2, "test": 2}.items():
    for name, colour in colours.items():
        folder = Path("data") / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.normal(colour, 40, (64, 64, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
EOF

# 2. darts_cnn declares 10 classes of 32x32 images: say what your data is, or spacec stops and
#    says what it found. --set classes=3 changes the space; --image-size 32 resizes the images.
spacec search darts_cnn --data imagefolder --data-dir data --set classes=3 --image-size 32 --epochs 1

# 3. Train the cell found from scratch: the search run gives the space and classes=3.
spacec train --genotype "$(ls -td runs/darts_cnn-* | head -1)" --data imagefolder --data-dir data --image-size 32 --epochs 1

# --- Your own space ------------------------------------------------------------------------

# 4. A space for these images: 64x64 inputs, 3 classes, 4 cells with a reduction at cell 2.
cat > my_cells.space <<'EOF'
space my_cells

param C = 4                 # initial channels
param layers = 4            # cells: normal, normal, reduce, normal
param classes = 3

# The candidate operations of every searched edge (the columns of α, in this order).
ops small {
    none = zero
    skip = identity
    conv = sep_conv(kernel=3)
    pool = max_pool(kernel=3)
}

cell normal {
    inputs   c_k2, c_k1             # the outputs of the two previous cells
    nodes    2
    edges    dense : small          # every earlier node -> each node: 5 edges
    combine  sum
    output   concat(n0, n1)
    derive   topk(k=2, exclude=[none])
}

cell reduce extends normal {
    stride 2 from inputs
}

network image_classifier {
    in_channels   3
    image_size    64                # the images' size: the data must have it (or --image-size)
    channels      C
    stem          conv_bn(kernel=3, channels=3 * C)
    body          normal * layers with reduce at [2]
    head          classifier(classes=classes)
}
EOF
spacec check my_cells.space
spacec info my_cells.space

# 5. Search it, train the cell found, export the trained network and classify files with it.
spacec search my_cells.space --data imagefolder --data-dir data --epochs 1
spacec train --genotype "$(ls -td runs/my_cells-* | head -1)" --data imagefolder --data-dir data --epochs 1
spacec export "$(ls -td runs/train-my_cells-* | head -1)" --format torchscript -o my_cells.pt
spacec predict my_cells.pt data/test/owl/0.png data/test/cat/0.png

# 6. Every run so far, with its status and best validation figure.
spacec runs

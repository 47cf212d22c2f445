"""The derived networks against the DARTS paper and reference code (Liu et al., ICLR 2019).

Parameter counts exclude the auxiliary head, as the reference code's count_parameters_in_MB
does. The generated module is also checked to run on its own: imported in a fresh interpreter
that has only torch, it gives the same logits as the network built in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from spacec.cli import main
from spacec.runtime.domains.image.data import ImageData, eval_loaders
from spacec.runtime.nn.flops import count_parameters, multiply_adds

# quark0/darts: `python train.py --auxiliary --cutout` reports "param size = 3.349342MB" for
# DARTS_V2 (C=36, 20 cells), and train_imagenet.py 4.718752MB in the mobile setting.
DARTS_V2_CIFAR = 3_349_342
DARTS_V2_IMAGENET = 4_718_752
# DARTS_V1 differs from DARTS_V2 only in its normal cell: a skip_connect (an identity, stride 1)
# where DARTS_V2 has a dil_conv_3x3 (ReLU, 3x3 depthwise, 1x1 pointwise, BatchNorm: C² + 11C
# weights). With 6 normal cells at each of C = 36, 72, 144: 3,349,342 − 6·(1,692 + 5,976 +
# 22,320) = 3,169,414.
DARTS_V1_CIFAR = 3_169_414
IMAGENET_MULTIPLY_ADDS_LIMIT = 600_000_000  # the mobile setting's bound (paper Sect. 3.4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run faster on one thread, much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("genotype", "expected"), [
    ("DARTS_V2", DARTS_V2_CIFAR),
    ("DARTS_V1", DARTS_V1_CIFAR),
])
def test_cifar_parameter_counts(compiled, genotype, expected):
    network = compiled("darts_cnn", C=36, layers=20).discrete_network(genotype, auxiliary=True)
    assert count_parameters(network) == expected
    assert any("auxiliary" in name for name, _ in network.named_parameters())


def test_dartsv1_differs_from_v2_by_one_dil_conv_per_normal_cell():
    per_width = [C * C + 11 * C for C in (36, 72, 144)]
    assert DARTS_V2_CIFAR - 6 * sum(per_width) == DARTS_V1_CIFAR


@pytest.mark.slow
def test_imagenet_mobile_setting(compiled):
    space = compiled("darts_imagenet")
    network = space.discrete_network("DARTS_V2", auxiliary=True)
    assert count_parameters(network) == DARTS_V2_IMAGENET
    assert space.input_shape == (3, 224, 224)
    assert multiply_adds(network, space.input_shape) < IMAGENET_MULTIPLY_ADDS_LIMIT


def test_tiny_network_learns_the_sample(compiled):
    torch.manual_seed(0)
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2", auxiliary=False)
    loader, _, _ = eval_loaders(ImageData(name="sample", batch_size=16, limit=16), seed=0)
    images, labels = next(iter(loader))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = F.cross_entropy(network(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


_FRESH_INTERPRETER = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    spec = importlib.util.spec_from_file_location("derived", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = module.Network(auxiliary=True)
    network.load_state_dict(torch.load(sys.argv[2], weights_only=True))
    network.eval()
    with torch.no_grad():
        logits = network(torch.load(sys.argv[3], weights_only=True))
    torch.save(logits, sys.argv[4])
    print(json.dumps(sorted(name.split(".")[0] for name in sys.modules
                            if name.split(".")[0] in ("spacec", "runtime"))))
""")


def test_standalone_file_round_trip(tmp_path, compiled):
    from click.testing import CliRunner

    source = tmp_path / "derived.py"
    result = CliRunner().invoke(main, ["compile", "darts_cnn", "--genotype", "DARTS_V2",
                                       "--set", "C=4", "--set", "layers=3", "-o", str(source)])
    assert result.exit_code == 0, result.output
    torch.manual_seed(0)
    network = compiled("darts_cnn", C=4, layers=3).discrete_network("DARTS_V2", auxiliary=True)
    images = torch.randn(3, 3, 32, 32)
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    torch.save(images, tmp_path / "images.pt")
    run = subprocess.run(
        [sys.executable, "-c", _FRESH_INTERPRETER, str(source), str(tmp_path / "weights.pt"),
         str(tmp_path / "images.pt"), str(tmp_path / "logits.pt")],
        capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
        timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []  # neither spacec nor runtime was imported
    network.eval()
    with torch.no_grad():
        expected = network(images)
    # Equal up to float rounding: the two processes may split the work over different threads.
    fresh = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert torch.allclose(fresh, expected, rtol=1e-5, atol=1e-6)


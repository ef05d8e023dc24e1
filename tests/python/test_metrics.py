"""Metrics from Python: Frechet distance and class-histogram KL against closed forms written here,
coupled error, and FmnistEvaluator with the shipped classifier (models/fmnist-classifier.pt).

The evaluator tests need the Fashion-MNIST files (Debian package dataset-fashion-mnist, or
$FEWSTEP_FASHION_MNIST_DIR) and skip cleanly without them.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import pytest
import torch

import fewstep as fs

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = REPO / "models" / "fmnist-classifier.pt"
FMNIST_DIR = Path(os.environ.get("FEWSTEP_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: fastest on a busy machine (a 2-thread OpenMP region whose second thread
    is descheduled waits for it at every op). Module-scoped so the evaluator fixture runs under it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_fd(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """FD via the eigenvalues of cov_a @ cov_b (similar to S_a^1/2 S_b S_a^1/2): an independent route."""
    lam = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * lam.sqrt().sum())


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Frechet distance


def test_frechet_one_dimensional_closed_form() -> None:
    a = fs.GaussianStats(torch.tensor([1.5]), torch.tensor([[4.0]]), 10)
    b = fs.GaussianStats(torch.tensor([-0.5]), torch.tensor([[0.25]]), 10)
    assert fs.frechet_distance(a, b) == pytest.approx(2.0**2 + (2.0 - 0.5) ** 2, abs=1e-12)


def test_frechet_diagonal_and_general_covariances() -> None:
    g = torch.Generator().manual_seed(0)
    va, vb = torch.rand(8, generator=g, dtype=torch.float64) + 0.1, torch.rand(8, generator=g, dtype=torch.float64)
    mu = torch.randn(8, generator=g, dtype=torch.float64)
    expected = float(mu.pow(2).sum() + (va.sqrt() - vb.sqrt()).pow(2).sum())
    got = fs.frechet_distance(fs.GaussianStats(mu, torch.diag(va), 5), fs.GaussianStats(mu * 0, torch.diag(vb), 5))
    assert got == pytest.approx(expected, rel=1e-10)

    ca, cb = spd(12, 1), spd(12, 2)
    ma, mb = torch.randn(12, dtype=torch.float64, generator=g), torch.randn(12, dtype=torch.float64, generator=g)
    fd = fs.frechet_distance(fs.GaussianStats(ma, ca, 50), fs.GaussianStats(mb, cb, 50))
    assert fd == pytest.approx(reference_fd(ma, ca, mb, cb), rel=1e-9)
    assert fs.frechet_distance(fs.GaussianStats(mb, cb, 50), fs.GaussianStats(ma, ca, 50)) == pytest.approx(fd, rel=1e-12)


def test_frechet_from_features() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 6, generator=g)
    b = torch.randn(200, 6, generator=g) * 1.5 + 0.3
    stats = fs.gaussian_stats(a)
    assert stats.count == 300 and stats.mean.dtype == torch.float64 and stats.cov.shape == (6, 6)
    assert torch.allclose(stats.cov, torch.cov(a.double().T))
    fd = fs.frechet_distance(a, b)
    sa, sb = fs.gaussian_stats(a), fs.gaussian_stats(b)
    assert fd == fs.frechet_distance(sa, sb)
    assert fd == pytest.approx(reference_fd(sa.mean, sa.cov, sb.mean, sb.cov), rel=1e-9)
    assert 0.0 <= fs.frechet_distance(a, a) < 1e-10
    with pytest.raises(ValueError, match="features_a and features_b"):
        fs.frechet_distance(a, b[:, :5])
    with pytest.raises(ValueError, match="features should be a 2-D tensor"):
        fs.gaussian_stats(torch.zeros(5))


# ----------------------------------------------------------------------------------------------
# Class histograms and coupled error


def test_class_histogram_kl_known_values() -> None:
    p, q = torch.tensor([5.0, 5.0]), torch.tensor([3.0, 1.0])
    assert fs.class_histogram_kl(p, q, pseudo_count=0.0) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-14)
    smoothed = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)  # (5.5, 5.5)/11 vs (3.5, 1.5)/5
    assert fs.class_histogram_kl(p, q) == pytest.approx(smoothed, abs=1e-14)
    assert math.isinf(fs.class_histogram_kl(p, torch.tensor([4.0, 0.0]), pseudo_count=0.0))
    counts = fs.class_histogram(torch.tensor([0, 2, 2, 9]), num_classes=10)
    assert counts.dtype == torch.float64 and counts.tolist() == [1, 0, 2, 0, 0, 0, 0, 0, 0, 1]
    assert fs.class_histogram(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), num_classes=2).tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"labels should be in \[0, 10\)"):
        fs.class_histogram(torch.tensor([10]))
    with pytest.raises(ValueError, match="same number of classes"):
        fs.class_histogram_kl(p, torch.ones(3))


def test_coupled_error_is_per_sample_rms() -> None:
    ref = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = torch.tensor([0.5, -2.0, 0.0, 1.0, 0.25], dtype=torch.float64)
    e = fs.coupled_error(ref + c.view(5, 1, 1, 1), ref)
    assert isinstance(e, fs.CoupledError)
    assert torch.allclose(e.per_sample, c.abs())
    assert e.n == 5 and e.median == pytest.approx(0.5) and e.max == pytest.approx(2.0)
    assert e.mean == pytest.approx(3.75 / 5) and e.rmse == pytest.approx(math.sqrt(5.3125 / 5))
    d = e.as_dict()
    assert set(d) == {"n", "median", "mean", "rmse", "max", "per_sample"} and e["median"] == d["median"]
    with pytest.raises(ValueError, match=r"reference should have x's shape \[5, 1, 4, 4\]"):
        fs.coupled_error(ref, ref[:4])


# ----------------------------------------------------------------------------------------------
# FmnistEvaluator with the shipped classifier

needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


def read_idx(path: Path) -> torch.Tensor:
    """IDX unsigned-byte file (gzip) -> uint8 tensor, parsed here independently of fewstep's reader."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    return read_idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz").float().div(127.5).sub(1.0).unsqueeze(1)


@pytest.fixture(scope="module")
def evaluator() -> fs.FmnistEvaluator:
    assert CLASSIFIER.is_file(), f"{CLASSIFIER} is missing: it is shipped with fewstep (fewstep train-classifier)"
    return fs.FmnistEvaluator(str(CLASSIFIER))


@needs_fmnist
def test_shipped_classifier_accuracy_and_features(evaluator: fs.FmnistEvaluator, test_images: torch.Tensor) -> None:
    assert evaluator.test_accuracy >= 0.90
    assert evaluator.feature_dim == 128
    assert evaluator.test_stats.count == 10000
    assert float(evaluator.test_class_counts.sum()) == 10000
    f = evaluator.features(test_images[:7])
    assert f.shape == (7, 128) and f.dtype == torch.float32 and bool((f >= 0).all())
    # The archive is plain TorchScript: Python's torch.jit gives the same features and logits.
    net = torch.jit.load(str(CLASSIFIER))
    with torch.no_grad():
        assert torch.allclose(net.features(test_images[:7]), f, atol=1e-5)
        assert torch.allclose(net(test_images[:7]), evaluator.logits(test_images[:7]), atol=1e-5)


@needs_fmnist
def test_real_images_score_near_the_floor_and_noise_far_above(
    evaluator: fs.FmnistEvaluator, test_images: torch.Tensor
) -> None:
    real = evaluator.evaluate(test_images[:500])
    assert isinstance(real, fs.FmnistReport) and real.n == 500
    assert real.fd_floor > 0 and real.fd < 2.0 * real.fd_floor
    assert real.class_kl < 0.05 and real.mean_confidence > 0.8
    assert real.fd_floor == evaluator.fd_floor(500)
    assert set(real.as_dict()) >= {"n", "fd", "fd_floor", "class_kl", "class_kl_floor", "mean_confidence"}

    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = evaluator.evaluate(noise, floor=False)
    assert math.isnan(bad.fd_floor)
    assert bad.fd > 10 * real.fd
    # One class only: the class KL flags it.
    trousers = evaluator.evaluate(test_images[:500][evaluator.logits(test_images[:500]).argmax(1) == 1], floor=False)
    assert trousers.class_kl > 1.0


@needs_fmnist
def test_evaluator_errors_name_the_argument(evaluator: fs.FmnistEvaluator, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"images should be a tensor \[N, 1, 28, 28\].*got \[3, 28, 28\]"):
        evaluator.evaluate(torch.zeros(3, 28, 28))
    with pytest.raises(TypeError, match="floating-point"):
        evaluator.features(torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="classifier_path '/no/such.pt' does not exist"):
        fs.FmnistEvaluator("/no/such.pt")

    class NotAClassifier(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "plain.pt"
    torch.jit.script(NotAClassifier()).save(str(path))
    with pytest.raises(ValueError, match="is not a fewstep classifier"):
        fs.FmnistEvaluator(str(path))

"""GaussianMixture from Python: construction, properties, sampling, exact quantities."""

from __future__ import annotations

import math

import pytest
import torch

import fewstep as fs
from conftest import MU, STD


def test_properties(gaussian: fs.GaussianMixture) -> None:
    assert gaussian.dim == 3 and gaussian.components == 1
    torch.testing.assert_close(gaussian.weights, torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(gaussian.means, torch.tensor([MU], dtype=torch.float64))
    cov = torch.diag(torch.tensor(STD, dtype=torch.float64) ** 2)
    torch.testing.assert_close(gaussian.covariances, cov[None], rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(gaussian.mean(), torch.tensor(MU, dtype=torch.float64))
    torch.testing.assert_close(gaussian.covariance(), cov, rtol=1e-14, atol=1e-16)


def test_random_is_reproducible_and_normalised() -> None:
    a = fs.GaussianMixture.random(dim=5, components=4, seed=3)
    b = fs.GaussianMixture.random(dim=5, components=4, seed=3)
    c = fs.GaussianMixture.random(dim=5, components=4, seed=4)
    assert (a.dim, a.components) == (5, 4)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=0)
    assert not torch.equal(a.means, c.means)
    assert a.weights.sum().item() == pytest.approx(1.0, abs=1e-14)
    d = fs.GaussianMixture.random(dim=5, components=4, seed=3, diagonal=True)
    cov = d.covariances
    assert d.diagonal
    torch.testing.assert_close(cov, torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1)), rtol=0, atol=0)


def test_sample_with_generator() -> None:
    g = fs.GaussianMixture.random(dim=4, components=3, seed=0)
    s1 = g.sample(100, generator=torch.Generator().manual_seed(7))
    s2 = g.sample(100, generator=torch.Generator().manual_seed(7))
    assert s1.shape == (100, 4)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)


def test_sample_moments(gaussian: fs.GaussianMixture) -> None:
    n = 40000
    x = gaussian.sample(n, generator=torch.Generator().manual_seed(0))
    std = torch.tensor(STD, dtype=torch.float64)
    # Sample mean: standard error std/sqrt(n); 5 standard errors.
    assert bool(((x.mean(0) - torch.tensor(MU, dtype=torch.float64)).abs() < 5 * std / math.sqrt(n)).all())
    # Sample variance: standard error var*sqrt(2/n).
    assert bool(((x.var(0) - std**2).abs() < 5 * std**2 * math.sqrt(2 / n)).all())


def test_denoise_and_log_prob_single_gaussian(gaussian: fs.GaussianMixture) -> None:
    alpha, sigma = 0.6, 0.8
    mu = torch.tensor(MU, dtype=torch.float64)
    var = torch.tensor(STD, dtype=torch.float64) ** 2
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x0, eps = gaussian.denoise(x, alpha, sigma)
    noisy_var = alpha**2 * var + sigma**2
    torch.testing.assert_close(x0, mu + alpha * var / noisy_var * (x - alpha * mu), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eps, sigma * (x - alpha * mu) / noisy_var, rtol=1e-12, atol=1e-12)
    expected = torch.distributions.Normal(alpha * mu, noisy_var.sqrt()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian.log_prob(x, alpha, sigma), expected, rtol=1e-12, atol=1e-12)
    r = gaussian.responsibilities(x, alpha, sigma)
    torch.testing.assert_close(r, torch.ones(10, 1, dtype=torch.float64))


def test_bad_mixtures() -> None:
    with pytest.raises(ValueError, match="weights"):
        fs.GaussianMixture(weights=torch.tensor([-1.0, 2.0]), means=torch.zeros(2, 3),
                           covariances=torch.ones(2, 3))
    with pytest.raises(ValueError, match="covariances"):
        fs.GaussianMixture(weights=torch.ones(2), means=torch.zeros(2, 3), covariances=torch.ones(2, 4))


def test_log_prob_of_the_data_distribution_matches_torch_distributions():
    # sigma = 0 is the clean data density: a mixture of N(mu_k, C_k) (no noise added).
    gmm = fs.GaussianMixture.random(dim=3, components=4, seed=2)
    x = gmm.sample(64, torch.Generator().manual_seed(0))
    mix = torch.distributions.Categorical(probs=gmm.weights)
    comp = torch.distributions.MultivariateNormal(gmm.means, covariance_matrix=gmm.covariances)
    expected = torch.distributions.MixtureSameFamily(mix, comp).log_prob(x)
    torch.testing.assert_close(gmm.log_prob(x, alpha=1.0, sigma=0.0), expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        gmm.log_prob(x, alpha=1.0, sigma=-1.0)

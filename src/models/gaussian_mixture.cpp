#include "fewstep/models/gaussian_mixture.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

constexpr double kLog2Pi = 1.8378770664093454835606594728112;

at::Tensor to_host_double(const at::Tensor& t) {
  // A private copy: later edits of the caller's tensor must not change the mixture.
  return t.detach().to(at::kCPU, at::kDouble, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

bool all_finite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

// Per-call view of the mixture on x's device, with the noised variances at (α, σ).
struct Noised {
  at::Tensor z;          // [B, K, D]: x − α μ_k in component k's eigenbasis (the axes if diagonal)
  at::Tensor var;        // [K, D]: α² s_k + σ², the noised eigenvalues
  at::Tensor log_joint;  // [B, K]: log w_k + log N(x; α μ_k, α² C_k + σ² I)
  at::Tensor eigvecs;    // [K, D, D] on x's device (undefined if diagonal)
  at::Tensor means;      // [K, D] on x's device
};

}  // namespace

GaussianMixture::GaussianMixture(const at::Tensor& weights, const at::Tensor& means, const at::Tensor& covariances) {
  FEWSTEP_CHECK_VALUE(weights.defined() && means.defined() && covariances.defined(),
                      "GaussianMixture: weights, means and covariances must be defined tensors");
  FEWSTEP_CHECK_TYPE(weights.is_floating_point() && means.is_floating_point() && covariances.is_floating_point(),
                     "GaussianMixture: weights, means and covariances must be floating point, got ",
                     weights.scalar_type(), ", ", means.scalar_type(), ", ", covariances.scalar_type());
  FEWSTEP_CHECK_VALUE(means.dim() == 2 && means.size(0) >= 1 && means.size(1) >= 1,
                      "GaussianMixture: means must have shape [K, D] with K, D >= 1, got ", means.sizes());
  const int64_t k = means.size(0), d = means.size(1);
  FEWSTEP_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == k, "GaussianMixture: weights must have shape [", k,
                      "] (one per row of means), got ", weights.sizes());
  const bool diag = covariances.dim() == 2;
  FEWSTEP_CHECK_VALUE((diag && covariances.size(0) == k && covariances.size(1) == d) ||
                          (covariances.dim() == 3 && covariances.size(0) == k && covariances.size(1) == d &&
                           covariances.size(2) == d),
                      "GaussianMixture: covariances must have shape [", k, ", ", d, "] (diagonal) or [", k, ", ", d,
                      ", ", d, "] (full), got ", covariances.sizes());

  at::Tensor w = to_host_double(weights);
  FEWSTEP_CHECK_VALUE(all_finite(w) && (w > 0).all().item<bool>(),
                      "GaussianMixture: weights must be finite and positive, got minimum ", w.min().item<double>());
  weights_ = w / w.sum();
  means_ = to_host_double(means);
  FEWSTEP_CHECK_VALUE(all_finite(means_), "GaussianMixture: means must be finite");
  diagonal_ = diag;

  at::Tensor c = to_host_double(covariances);
  FEWSTEP_CHECK_VALUE(all_finite(c), "GaussianMixture: covariances must be finite");
  if (diag) {
    const double min_var = c.min().item<double>();
    FEWSTEP_CHECK_VALUE(min_var > 0.0, "GaussianMixture: diagonal covariances must be positive, got minimum ", min_var);
    eigvals_ = c;
    return;
  }
  // Symmetric up to round-off of the caller's dtype (float32 inputs are accepted), then symmetrised exactly.
  for (int64_t i = 0; i < k; ++i) {
    const at::Tensor ci = c[i];
    const double scale = ci.abs().max().item<double>();
    const double asym = (ci - ci.transpose(0, 1)).abs().max().item<double>();
    FEWSTEP_CHECK_VALUE(asym <= 1e-6 * scale, "GaussianMixture: covariances[", i,
                        "] must be symmetric, got max |C - C^T| = ", asym, " (max |C| = ", scale, ")");
  }
  c = 0.5 * (c + c.transpose(1, 2));
  auto [s, u] = at::linalg_eigh(c);
  for (int64_t i = 0; i < k; ++i) {
    const double lo = s[i].min().item<double>();
    const double hi = s[i].max().item<double>();
    // Relative floor: an eigenvalue at round-off level is singular for the posterior maths.
    FEWSTEP_CHECK_VALUE(lo > 1e-12 * std::max(hi, 0.0) && lo > 0.0, "GaussianMixture: covariances[", i,
                        "] must be positive definite, got smallest eigenvalue ", lo, " (largest ", hi, ")");
  }
  eigvals_ = s.contiguous();
  eigvecs_ = u.contiguous();
}

std::shared_ptr<GaussianMixture> GaussianMixture::random(int64_t dim, int64_t components, uint64_t seed,
                                                         bool diagonal, double spread, double min_var,
                                                         double max_var) {
  FEWSTEP_CHECK_VALUE(dim >= 1, "GaussianMixture.random: dim must be >= 1, got ", dim);
  FEWSTEP_CHECK_VALUE(components >= 1, "GaussianMixture.random: components must be >= 1, got ", components);
  FEWSTEP_CHECK_VALUE(std::isfinite(spread) && spread >= 0.0,
                      "GaussianMixture.random: spread must be finite and >= 0, got ", spread);
  FEWSTEP_CHECK_VALUE(std::isfinite(min_var) && std::isfinite(max_var) && min_var > 0.0 && min_var <= max_var,
                      "GaussianMixture.random: need 0 < min_var <= max_var (finite), got min_var = ", min_var,
                      ", max_var = ", max_var);
  // A local generator: the same seed gives the same mixture whatever the global RNG state.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  // Per-coordinate N(0, spread²): data of roughly unit variance per coordinate (spread = 1), as diffusion
  // schedules assume, with modes far apart relative to their widths (variances ≤ max_var).
  at::Tensor means = at::randn({components, dim}, gen, opts) * spread;
  at::Tensor eigvals = min_var + (max_var - min_var) * at::rand({components, dim}, gen, opts);
  at::Tensor cov;
  if (diagonal) {
    cov = eigvals;
  } else {
    // Haar-distributed orthogonal matrices: QR of a Gaussian matrix with R's diagonal signs folded into Q.
    auto [q, r] = at::linalg_qr(at::randn({components, dim, dim}, gen, opts));
    q = q * at::sign(at::diagonal(r, 0, -2, -1)).unsqueeze(-2);
    cov = at::matmul(q * eigvals.unsqueeze(-2), q.transpose(-2, -1));
    cov = 0.5 * (cov + cov.transpose(-2, -1));
  }
  at::Tensor weights = at::rand({components}, gen, opts) + 0.5;
  return std::make_shared<GaussianMixture>(weights, means, cov);
}

at::Tensor GaussianMixture::covariances() const {
  if (diagonal_) return at::diag_embed(eigvals_);
  return at::matmul(eigvecs_ * eigvals_.unsqueeze(-2), eigvecs_.transpose(-2, -1));
}

at::Tensor GaussianMixture::mean() const { return at::matmul(weights_, means_); }

at::Tensor GaussianMixture::covariance() const {
  // Law of total covariance: Σ w_k (C_k + μ_k μ_kᵀ) − m mᵀ, with centred means for accuracy.
  const at::Tensor centred = means_ - mean().unsqueeze(0);
  const at::Tensor w = weights_.view({-1, 1, 1});
  return (w * (covariances() + centred.unsqueeze(2) * centred.unsqueeze(1))).sum(0);
}

std::pair<at::Tensor, at::Tensor> GaussianMixture::sample_with_labels(int64_t n,
                                                                      std::optional<at::Generator> generator) const {
  FEWSTEP_CHECK_VALUE(n >= 0, "GaussianMixture.sample: n must be >= 0, got ", n);
  // Sample where the generator lives (CPU by default), in float64.
  const at::Device device = generator.has_value() && generator->defined() ? generator->device() : at::Device(at::kCPU);
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
  const int64_t d = dim();
  if (n == 0) return {at::empty({0, d}, opts), at::empty({0}, opts.dtype(at::kLong))};
  const at::Tensor w = weights_.to(device);
  const at::Tensor labels = at::multinomial(w, n, /*replacement=*/true, generator);
  const at::Tensor z = at::randn({n, d}, generator, opts);
  const at::Tensor means = means_.to(device);
  const at::Tensor scale = eigvals_.to(device).sqrt();
  if (diagonal_) return {means.index_select(0, labels) + scale.index_select(0, labels) * z, labels};
  // Full covariance: x = μ_k + U_k sqrt(s_k) z, grouped by component to avoid an [n, D, D] gather.
  const at::Tensor u = eigvecs_.to(device);
  at::Tensor x = at::empty({n, d}, opts);
  for (int64_t k = 0; k < components(); ++k) {
    const at::Tensor idx = at::nonzero(labels == k).view({-1});
    if (idx.numel() == 0) continue;
    const at::Tensor zk = z.index_select(0, idx) * scale[k];
    x.index_copy_(0, idx, means[k] + at::matmul(zk, u[k].transpose(0, 1)));
  }
  return {x, labels};
}

at::Tensor GaussianMixture::sample(int64_t n, std::optional<at::Generator> generator) const {
  return sample_with_labels(n, std::move(generator)).first;
}

namespace {

// σ = 0 (the data distribution itself) is fine for densities and responsibilities, whose component
// variances α²λ + σ² stay positive; the denoiser divides by σ and needs σ > 0.
void check_input(const at::Tensor& x, int64_t d, double alpha, double sigma, const char* where,
                 bool allow_zero_sigma = false) {
  FEWSTEP_CHECK_VALUE(x.defined(), "GaussianMixture.", where, ": x must be a defined tensor");
  FEWSTEP_CHECK_TYPE(x.is_floating_point(), "GaussianMixture.", where, ": x must be floating point, got ",
                     x.scalar_type());
  FEWSTEP_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == d, "GaussianMixture.", where, ": x must have shape [..., ", d,
                      "], got ", x.sizes());
  FEWSTEP_CHECK_VALUE(std::isfinite(alpha) && alpha > 0.0, "GaussianMixture.", where,
                      ": alpha must be finite and positive, got ", alpha);
  FEWSTEP_CHECK_VALUE(std::isfinite(sigma) && (sigma > 0.0 || (allow_zero_sigma && sigma == 0.0)),
                      "GaussianMixture.", where, ": sigma must be finite and ", allow_zero_sigma ? ">= 0" : "> 0",
                      ", got ", sigma);
}

Noised noised(const at::Tensor& x, double alpha, double sigma, const at::Tensor& weights, const at::Tensor& means,
              const at::Tensor& eigvals, const at::Tensor& eigvecs) {
  const int64_t d = means.size(1);
  const at::Device device = x.device();
  Noised n;
  n.means = means.to(device);
  const at::Tensor xf = x.to(at::kDouble).reshape({-1, d});
  const at::Tensor diff = xf.unsqueeze(1) - alpha * n.means.unsqueeze(0);  // [B, K, D]
  if (eigvecs.defined()) {
    n.eigvecs = eigvecs.to(device);
    n.z = at::einsum("bkd,kde->bke", {diff, n.eigvecs});  // U_kᵀ (x − α μ_k)
  } else {
    n.z = diff;
  }
  n.var = eigvals.to(device) * (alpha * alpha) + sigma * sigma;
  const at::Tensor log_norm = -0.5 * (n.var.log().sum(-1) + static_cast<double>(d) * kLog2Pi);  // [K]
  const at::Tensor quad = (n.z * n.z / n.var.unsqueeze(0)).sum(-1);                            // [B, K]
  n.log_joint = weights.to(device).log().unsqueeze(0) + log_norm.unsqueeze(0) - 0.5 * quad;
  return n;
}

std::vector<int64_t> batch_shape(const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.pop_back();
  return sizes;
}

}  // namespace

DenoiserOutput GaussianMixture::denoise(const at::Tensor& x, double alpha, double sigma) const {
  check_input(x, dim(), alpha, sigma, "denoise");
  const Noised n = noised(x, alpha, sigma, weights_, means_, eigvals_, eigvecs_);
  const at::Tensor r = at::softmax(n.log_joint, -1).unsqueeze(-1);  // [B, K, 1]
  // Per component, in the eigenbasis: (α² C + σ² I)^{-1}(x − αμ) = z / var.
  const at::Tensor white = n.z / n.var.unsqueeze(0);  // [B, K, D]
  const at::Tensor s = eigvals_.to(x.device());
  // ε̂ = σ Σ r_k (α²C_k + σ²I)^{-1}(x − αμ_k) (= −σ ∇log p_t) and
  // x̂_0 = Σ r_k (μ_k + α C_k (α²C_k + σ²I)^{-1}(x − αμ_k)); both exact, so α x̂_0 + σ ε̂ = x.
  at::Tensor eps_k = white * sigma;
  at::Tensor shift_k = white * s.unsqueeze(0) * alpha;
  if (n.eigvecs.defined()) {
    eps_k = at::einsum("kde,bke->bkd", {n.eigvecs, eps_k});
    shift_k = at::einsum("kde,bke->bkd", {n.eigvecs, shift_k});
  }
  const at::Tensor eps = (r * eps_k).sum(1);
  const at::Tensor x0 = (r * (n.means.unsqueeze(0) + shift_k)).sum(1);
  return {x0.to(x.scalar_type()).reshape(x.sizes()), eps.to(x.scalar_type()).reshape(x.sizes())};
}

at::Tensor GaussianMixture::log_prob(const at::Tensor& x, double alpha, double sigma) const {
  check_input(x, dim(), alpha, sigma, "log_prob", /*allow_zero_sigma=*/true);
  const Noised n = noised(x, alpha, sigma, weights_, means_, eigvals_, eigvecs_);
  return at::logsumexp(n.log_joint, -1).to(x.scalar_type()).reshape(batch_shape(x));
}

at::Tensor GaussianMixture::responsibilities(const at::Tensor& x, double alpha, double sigma) const {
  check_input(x, dim(), alpha, sigma, "responsibilities", /*allow_zero_sigma=*/true);
  const Noised n = noised(x, alpha, sigma, weights_, means_, eigvals_, eigvecs_);
  auto shape = batch_shape(x);
  shape.push_back(components());
  return at::softmax(n.log_joint, -1).to(x.scalar_type()).reshape(shape);
}

}  // namespace fewstep

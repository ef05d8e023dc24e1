/// @file metrics/class_histogram.h
/// @brief Class histograms of classified samples and the KL divergence between two of them.
///
/// A generator that drops or over-produces a class can still have a small Fréchet distance; the
/// histogram of a classifier's predicted classes shows it directly. fewstep reports
///     KL(p_ref ‖ p_sample) = Σ_k p_ref,k log(p_ref,k / p_sample,k)
/// with p_ref the histogram of the *reference* (e.g. the classifier's predictions on the test
/// set) and p_sample that of the generated samples. This direction weights each class by how
/// common it is in the reference and grows without bound when the samples miss a class the
/// reference has (mode dropping), which is the failure it is meant to catch.
///
/// Smoothing: both histograms are turned into probabilities with an additive pseudo-count α per
/// class, p_k = (c_k + α)/(N + K α) (α = ½ by default: Jeffreys' prior), so the KL is finite for
/// empty classes and a sample of N with one empty class out of K scores about log(N/(Kα))/K
/// rather than infinity. α = 0 gives the plain (possibly infinite) KL.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fewstep {

/// Counts per class, float64 [num_classes], of `labels` — int64 class indices [N] (each in
/// [0, num_classes)), or logits/probabilities [N, num_classes] whose argmax is taken.
/// ValueError naming `labels` for other shapes or out-of-range indices.
at::Tensor class_histogram(const at::Tensor& labels, int64_t num_classes);

/// KL(p_ref ‖ p_sample) in nats between two count histograms [K] (non-negative, finite, same K,
/// each with a positive total), smoothed with `pseudo_count` α >= 0 as documented above.
/// ValueError naming the argument otherwise.
double class_histogram_kl(const at::Tensor& reference_counts, const at::Tensor& sample_counts,
                          double pseudo_count = 0.5);

}  // namespace fewstep

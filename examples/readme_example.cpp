#include <fewstep/fewstep.h>

#include <cstdio>

int main() {
  // The shipped teacher: TorchScript network + sidecar (schedule, prediction, shape, checksums).
  const fewstep::ModelFile teacher = fewstep::load_model_file("models/fmnist-unet-eps.pt");
  const at::Tensor x_T = fewstep::randn_per_sample(teacher.sample_shape, {0, 1, 2, 3, 4, 5, 6, 7},
                                                   at::TensorOptions().dtype(at::kFloat));
  const fewstep::Solution out = fewstep::sample(teacher.denoiser, x_T, "unipc", 10);
  fewstep::save_image_grid("grid_cpp.png", out.x);
  std::printf("%lld samples, %lld network evaluations each\n", static_cast<long long>(out.x.size(0)),
              static_cast<long long>(out.nfe));
  return 0;
}
